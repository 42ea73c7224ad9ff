#include "core/job/job_plan.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/checkpoint/architecture.h"
#include "core/runtime/decoder_block.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

constexpr uint64_t kF32 = sizeof(float);

uint64_t U(int64_t v) { return static_cast<uint64_t>(std::max<int64_t>(0, v)); }

// GPTQ-style scratch for one layer of rows x cols: Wᵀ, the dequantized result and the error measurement in
// float32, the codes, and H's damped copy that becomes the factor of H⁻¹ (a modified copy of H too, for
// act-order or dead inputs).
uint64_t LayerScratch(int64_t rows, int64_t cols) { return 4 * U(rows) * U(cols) * kF32 + 2 * U(cols) * U(cols) * kF32; }

}  // namespace

nlohmann::json ResourceEstimate::ToJson() const {
  return {{"streaming_bytes", streaming},     {"block_weights_bytes", block_weights}, {"activations_bytes", activations},
          {"statistics_bytes", statistics},   {"evaluation_bytes", evaluation},       {"total_bytes", total},
          {"activation_storage", activation_storage}, {"calibration_rows", calibration_rows}};
}

std::string FormatBytes(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) return absl::StrFormat("%.2f GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return absl::StrFormat("%.1f MiB", b / (1024.0 * 1024));
  return absl::StrFormat("%.1f KiB", b / 1024.0);
}

std::string ResourceEstimate::Summary() const {
  return absl::StrCat(FormatBytes(total), " (streaming ", FormatBytes(streaming), ", decoder blocks ",
                      FormatBytes(block_weights), ", calibration activations ", FormatBytes(activations), " in ",
                      activation_storage, ", statistics ", FormatBytes(statistics), ", evaluation ",
                      FormatBytes(evaluation), ")");
}

absl::StatusOr<ResourceEstimate> EstimateResources(const ModelDescriptor& descriptor,
                                                   const std::vector<TensorInfo>& tensors, const QuantizeJobSpec& spec,
                                                   const JobOptions& options) {
  ResourceEstimate e;
  uint64_t largest = 0, largest_matrix = 0, embed_bytes = 0;
  for (const TensorInfo& t : tensors) {
    largest = std::max(largest, t.size);
    const TensorRole role = RoleOf(t.name, t.shape.size());
    // Only quantized matrices are widened to float32 in the stream; the rest is converted in small chunks.
    const bool quantized = role == TensorRole::kLinear || (role == TensorRole::kLmHead && spec.quantize_lm_head);
    if (quantized && t.shape.size() == 2) largest_matrix = std::max(largest_matrix, U(t.shape[0]) * U(t.shape[1]));
    if (role == TensorRole::kEmbedding) embed_bytes = std::max(embed_bytes, t.size);
  }
  // The streaming window holds raw tensors up to its byte bound (one tensor may exceed it alone); each
  // worker converts one to float32 and packs it.
  const uint64_t workers = static_cast<uint64_t>(std::max(1, options.max_tensors_in_flight));
  e.streaming = std::max<uint64_t>(options.max_bytes_in_flight, largest) + workers * 3 * largest_matrix * kF32;
  const bool calibrate = Calibrates(spec), evaluate = !spec.evaluation.text_uri.empty();
  // A config naming an architecture outside the table is refused for every job: which tensors are its
  // linear layers, routers and norms is known only for the table's. A checkpoint with no config at all
  // is quantized data-free by tensor names.
  if (descriptor.architecture != ModelDescriptor::Unknown().architecture || calibrate || evaluate) {
    RETURN_IF_ERROR(ArchitectureOf(descriptor).status());
  }
  if (calibrate || evaluate) {
    ASSIGN_OR_RETURN(const BlockGeometry g, BlockGeometry::Of(descriptor));
    const uint64_t block_f32 = U(g.BlockParameters()) * kF32;
    uint64_t block_raw = 0;
    for (const TensorInfo& t : tensors) {
      if (LayerIndexOf(t.name) == 0) block_raw += t.size;
    }
    const uint64_t lm_head = U(g.vocab) * U(g.dim) * kF32;
    const int64_t chunk = std::max<int64_t>(options.rows_per_chunk, spec.calibration.seqlen);
    // One chunk's temporaries: gate, up and their product, the norm outputs and the attention's q/k/v and
    // scores of one window.
    const uint64_t chunk_scratch = U(chunk) * (3 * U(g.hidden) + 6 * U(g.dim) + 2 * U(g.kv_dim())) * kF32 +
                                   U(spec.calibration.seqlen) * U(spec.calibration.seqlen) * kF32;
    if (calibrate) {
      e.block_weights = block_f32 + 2 * block_raw;  // this block in float32 and as stored, the next as stored
      e.calibration_rows = static_cast<int64_t>(spec.calibration.samples) * spec.calibration.seqlen;
      const bool awq = spec.quant.method == Method::kAwq;
      // Sequential: x and h (and the attention output when its width differs); AWQ also keeps both norms'
      // outputs and both sub-blocks' float outputs for its searches.
      const uint64_t hidden_copies = awq ? 5 : (g.q_dim() == g.dim ? 2 : 3);
      e.activations = hidden_copies * U(e.calibration_rows) * U(g.dim) * kF32 + chunk_scratch + embed_bytes;
      // The groups' statistics (all four at once for AWQ), and the scratch of the group's layers, which are
      // quantized in parallel.
      const int64_t widths[] = {g.dim, g.q_dim(), g.dim, g.hidden};
      const std::vector<int64_t> layer_rows[] = {{g.q_dim(), g.kv_dim(), g.kv_dim()}, {g.dim}, {g.hidden, g.hidden}, {g.dim}};
      uint64_t all = 0, worst = 0;
      for (int i = 0; i < 4; ++i) {
        const uint64_t h = U(widths[i]) * U(widths[i]) * kF32;
        uint64_t scratch = 0;
        for (int64_t rows : layer_rows[i]) scratch += LayerScratch(rows, widths[i]);
        all += h;
        worst = std::max(worst, h + scratch);
      }
      e.statistics = awq ? all + 3 * block_f32 / 7 * 2 : worst;
    }
    if (evaluate) {
      const int64_t eval_rows = static_cast<int64_t>(spec.evaluation.windows) * spec.evaluation.seqlen;
      // Per model: hidden states, one block in float32 and two as read (the written model's reader
      // dequantizes, so as much as float32), lm_head, the embeddings read; one chunk's scratch and logits.
      e.evaluation = 2 * (U(eval_rows) * U(g.dim) * kF32 + 3 * block_f32 + lm_head + embed_bytes) +
                     chunk_scratch + (64u << 20) * 2;
    }
  }
  e.total = e.streaming + std::max(e.block_weights + e.activations + e.statistics, e.evaluation);
  return e;
}

absl::Status CheckMemoryLimit(const ResourceEstimate& estimate, uint64_t limit_bytes) {
  if (limit_bytes == 0 || estimate.total <= limit_bytes) return absl::OkStatus();
  return absl::ResourceExhaustedError(absl::StrCat("the job needs up to ", FormatBytes(estimate.total),
                                                   ", above the memory limit of ", FormatBytes(limit_bytes), ": ",
                                                   estimate.Summary()));
}

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  static const std::pair<const char*, uint64_t> kUnits[] = {
      {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"TiB", 1ull << 40}, {"Ki", 1ull << 10},
      {"Mi", 1ull << 20},  {"Gi", 1ull << 30},  {"Ti", 1ull << 40},  {"KB", 1000ull},     {"MB", 1000000ull},
      {"GB", 1000000000ull}, {"TB", 1000000000000ull}, {"K", 1000ull}, {"M", 1000000ull}, {"G", 1000000000ull},
      {"T", 1000000000000ull}, {"B", 1ull}};
  uint64_t unit = 1;
  absl::string_view number = text;
  for (const auto& [suffix, size] : kUnits) {
    if (absl::EndsWith(text, suffix)) {
      number = text.substr(0, text.size() - std::strlen(suffix));
      unit = size;
      break;
    }
  }
  double value = 0;
  if (!absl::SimpleAtod(number, &value) || value < 0 || value * static_cast<double>(unit) > 1.8e19) {
    return absl::InvalidArgumentError(absl::StrCat("not a byte size: '", text, "' (e.g. 24Gi, 20G, 512Mi)"));
  }
  return static_cast<uint64_t>(value * static_cast<double>(unit));
}

uint64_t DefaultMemoryLimit() {
  // cgroup v2, then v1; "max" or an absurd v1 value means no limit.
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    std::ifstream in(path);
    std::string value;
    uint64_t limit = 0;
    if (in >> value && absl::SimpleAtoi(value, &limit) && limit > 0 && limit < (1ull << 60)) return limit;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) / 10 * 8 : 0;
}

}  // namespace lowbit
