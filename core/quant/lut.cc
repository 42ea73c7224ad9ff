#include "core/quant/lut.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/quant/kmeans.h"
#include "core/tensor/dtype.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// The LUT of one tile's values (n / d vectors of d), before FP16 rounding.
absl::StatusOr<std::vector<float>> FitTable(const float* x, const float* weights, int64_t n, const LutOptions& o) {
  const int k = 1 << o.bits;
  const int d = o.cluster_dim;
  switch (o.mode) {
    case LutMode::kKMeans: {
      const KMeansOptions km{k, o.max_iterations, o.seed, 256};
      return KMeans(x, weights, n / d, d, km).centroids;
    }
    case LutMode::kUniform: {
      const auto [lo, hi] = std::minmax_element(x, x + n);
      std::vector<float> table(static_cast<size_t>(k));
      for (int i = 0; i < k; ++i) table[i] = *lo + (*hi - *lo) * static_cast<float>(i) / static_cast<float>(k - 1);
      return table;
    }
    case LutMode::kUnique: {
      std::vector<float> table(x, x + n);
      std::sort(table.begin(), table.end());
      table.erase(std::unique(table.begin(), table.end()), table.end());
      if (static_cast<int>(table.size()) > k) {
        return absl::InvalidArgumentError(absl::StrCat("mode unique: ", table.size(), " distinct values do not fit a ",
                                                       o.bits, "-bit LUT (", k, " entries)"));
      }
      table.resize(static_cast<size_t>(k), table.back());
      return table;
    }
  }
  return absl::InternalError("unknown LUT mode");
}

}  // namespace

absl::Status ValidateLutOptions(const LutOptions& o) {
  if (o.bits != 1 && o.bits != 2 && o.bits != 3 && o.bits != 4 && o.bits != 6 && o.bits != 8) {
    return absl::InvalidArgumentError(absl::StrCat("bits: LUT palettization takes 1, 2, 3, 4, 6 or 8, got ", o.bits));
  }
  if (o.cluster_dim != 1 && o.cluster_dim != 2 && o.cluster_dim != 4) {
    return absl::InvalidArgumentError(absl::StrCat("cluster_dim: must be 1, 2 or 4, got ", o.cluster_dim));
  }
  if (o.cluster_dim > 1 && o.mode != LutMode::kKMeans) {
    return absl::InvalidArgumentError("cluster_dim: vector palettization needs mode kmeans");
  }
  if (o.granularity == LutGranularity::kPerGroupedChannel && o.group_size <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("group_size: output channels per LUT must be positive, got ", o.group_size));
  }
  if (o.max_iterations < 1) return absl::InvalidArgumentError("max_iterations: must be at least 1");
  return absl::OkStatus();
}

absl::StatusOr<CodebookTensor> QuantizeLut(const Matrix& w, const LutOptions& o, const CalibrationStats* stats,
                                           const JobContext* context) {
  RETURN_IF_ERROR(ValidateLutOptions(o));
  RETURN_IF_ERROR(CheckFinite(w.data.data(), w.rows * w.cols, "weights"));
  const int d = o.cluster_dim;
  if (w.rows % d != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cluster_dim: ", d, " does not divide the ", w.rows, " output channels"));
  }
  if (o.granularity == LutGranularity::kPerGroupedChannel && std::min(o.group_size, w.rows) % d != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cluster_dim: ", d, " does not divide group_size ", o.group_size));
  }
  const bool sensitive = o.sensitive && stats != nullptr && o.mode == LutMode::kKMeans;
  if (sensitive && (stats->cols != w.cols || stats->hessian.size() != static_cast<size_t>(w.cols * w.cols))) {
    return absl::InvalidArgumentError(absl::StrCat("the Hessian is for ", stats->cols, " inputs, the layer has ", w.cols));
  }
  CodebookTensor t;
  t.rows = w.rows;
  t.cols = w.cols;
  t.dim = d;
  t.along_rows = d > 1;
  t.index_bits = o.bits;
  t.group_rows = o.granularity == LutGranularity::kPerTensor ? w.rows : std::min(o.group_size, w.rows);
  t.group_cols = w.cols;
  t.storage = CodebookTensor::Storage::kF16;

  std::vector<float> x = w.data;
  if (o.per_channel_scale) {
    t.row_scales.resize(static_cast<size_t>(w.rows));
    for (int64_t r = 0; r < w.rows; ++r) {
      float amax = 0;
      for (int64_t c = 0; c < w.cols; ++c) amax = std::max(amax, std::abs(w.row(r)[c]));
      const float scale = amax > 0 ? RoundToF16(amax) : 1.0f;
      if (!std::isfinite(scale)) return absl::InvalidArgumentError(absl::StrCat("row ", r, ": scale overflows FP16"));
      t.row_scales[r] = scale;
      for (int64_t c = 0; c < w.cols; ++c) x[r * w.cols + c] /= scale;
    }
  }
  std::vector<float> weights;
  if (sensitive) {  // the error of w[r][c] costs H[c][c]·scale_r² in the layer's output
    weights.resize(x.size());
    for (int64_t r = 0; r < w.rows; ++r) {
      const float s2 = o.per_channel_scale ? t.row_scales[r] * t.row_scales[r] : 1.0f;
      for (int64_t c = 0; c < w.cols; ++c) {
        weights[r * w.cols + c] = std::max(0.0f, stats->hessian[c * w.cols + c]) * s2;
      }
    }
  }
  const int k = 1 << o.bits;
  t.codes.resize(static_cast<size_t>(w.rows * w.cols / d));
  t.codebooks.reserve(static_cast<size_t>(t.tiles() * k * d));
  std::vector<float> vectors, vector_w;
  for (int64_t r0 = 0; r0 < w.rows; r0 += t.group_rows) {
    RETURN_IF_ERROR(CheckCancelled(context));
    const int64_t r1 = std::min(w.rows, r0 + t.group_rows);
    const int64_t n = (r1 - r0) * w.cols;  // values in this tile, n / d vectors
    // Scalars are the tile as it lies; vectors of d consecutive output channels are gathered, (r1 - r0) / d
    // rows of cols vectors.
    const float* points = x.data() + r0 * w.cols;
    const float* tile_w = sensitive ? weights.data() + r0 * w.cols : nullptr;
    if (d > 1) {
      vectors.resize(static_cast<size_t>(n));
      if (sensitive) vector_w.resize(vectors.size());
      for (int64_t u = 0; u < (r1 - r0) / d; ++u)
        for (int64_t c = 0; c < w.cols; ++c)
          for (int j = 0; j < d; ++j) {
            const int64_t from = (r0 + u * d + j) * w.cols + c, to = (u * w.cols + c) * d + j;
            vectors[to] = x[from];
            if (sensitive) vector_w[to] = weights[from];
          }
      points = vectors.data();
      tile_w = sensitive ? vector_w.data() : nullptr;
    }
    ASSIGN_OR_RETURN(std::vector<float> table, FitTable(points, tile_w, n, o));
    for (float& v : table) {
      v = RoundToF16(v);
      if (!std::isfinite(v)) return absl::InvalidArgumentError("a LUT entry overflows FP16");
    }
    if (d == 1) std::sort(table.begin(), table.end());
    uint16_t* codes = t.codes.data() + r0 / d * w.cols;
    for (int64_t v = 0; v < n / d; ++v) {
      codes[v] = static_cast<uint16_t>(
          d == 1 ? NearestSorted(points[v], table.data(), k)
                 : NearestCentroid(points + v * d, tile_w == nullptr ? nullptr : tile_w + v * d, table.data(), k, d));
    }
    t.codebooks.insert(t.codebooks.end(), table.begin(), table.end());
  }
  return t;
}

}  // namespace lowbit
