#include "client/flags.h"

#include <cstring>
#include <set>
#include <string>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/job/job_plan.h"
#include "server/proto_convert.h"
#include "core/util/status_macros.h"

ABSL_FLAG(std::string, input, "", "checkpoint to read: a path, file:// or s3:// URI (.safetensors, index, llama2.c .bin, or a directory)");
ABSL_FLAG(std::string, output, "", "output directory (path or URI)");
ABSL_FLAG(std::string, method, "rtn", "quantization method: rtn | int8 | gptq | awq | lut | vq | onebit");
ABSL_FLAG(std::string, format, "auto", "output format: auto (gptq for rtn/int8/gptq/awq, native for lut/vq/onebit) | gptq | awq | native");
ABSL_FLAG(int, grid, 20, "awq: points of the alpha search");
ABSL_FLAG(bool, clip, true, "awq: clip search per output group (--noclip to skip)");
ABSL_FLAG(std::string, mode, "kmeans", "lut: kmeans | uniform | unique");
ABSL_FLAG(std::string, granularity, "per_tensor", "lut: per_tensor | per_grouped_channel (--group-size output channels per LUT, default 32)");
ABSL_FLAG(int, cluster_dim, 1, "lut: 1, or 2 / 4 for vector palettization (vectors of consecutive output channels)");
ABSL_FLAG(bool, per_channel_scale, false, "lut: normalise each output channel by its max |w| first");
ABSL_FLAG(bool, sensitive, true, "lut: weight k-means by the Hessian diagonal when --calib is given");
ABSL_FLAG(int, seed, 0, "lut, vq: k-means seed");
ABSL_FLAG(int, max_iterations, 0, "lut: Lloyd iterations (default 50); onebit: decomposition iterations (default 100)");
ABSL_FLAG(int, dim, 2, "vq: dimensions per vector, 1, 2 or 4");
ABSL_FLAG(int, group_cols, 256, "vq: columns per codebook");
ABSL_FLAG(int, group_rows, 256, "vq: rows per codebook, -1 = all");
ABSL_FLAG(int, em_iterations, 25, "vq: k-means iterations of the codebook initialisation");
ABSL_FLAG(int, update_iterations, 10, "vq: codebook update steps after the pass (0 = none)");
ABSL_FLAG(std::string, decomposition, "nmf", "onebit: rank-1 decomposition of |W|: nmf | svd");
ABSL_FLAG(int, refine_iterations, 0, "onebit: calibrated least-squares rounds for the value vectors (needs --calib)");
ABSL_FLAG(double, damp_percent, 0.01, "gptq, vq: diagonal damping as a fraction of its mean");
ABSL_FLAG(bool, act_order, false, "gptq: quantize columns by decreasing Hessian diagonal (desc_act, g_idx)");
ABSL_FLAG(bool, static_groups, false, "gptq: grids from the original weights");
ABSL_FLAG(std::string, calib, "", "calibration text for gptq, awq, vq, sensitive lut, refined onebit (path or URI), tokenized with --tokenizer, or token ids (.ids.json)");
ABSL_FLAG(int, calib_samples, 32, "calibration windows");
ABSL_FLAG(int, calib_seqlen, 128, "tokens per calibration window");
ABSL_FLAG(int, calib_seed, 0, "seed choosing the calibration windows");
ABSL_FLAG(std::string, reference, "", "eval: the model to measure KL divergence against (e.g. the unquantized one)");
ABSL_FLAG(std::string, text, "", "eval: text to evaluate on");
ABSL_FLAG(std::string, distributions, "",
          "eval: write the model's next-token log-probabilities here (float32 little-endian, vocabulary values per predicted position)");
ABSL_FLAG(std::string, eval_text, "", "evaluate the result: perplexity and KL to the source on this text");
ABSL_FLAG(int, eval_windows, 16, "evaluation: non-overlapping windows");
ABSL_FLAG(int, eval_seqlen, 128, "evaluation: tokens per window");
ABSL_FLAG(int, bits, 0, "bits per weight code, 2..8, default 4 (int8: 8; lut: 1, 2, 3, 4, 6, 8; vq: bits per dimension, default 3)");
ABSL_FLAG(int, group_size, 0, "input columns per quantization group, default 128; -1 = per output channel (lut: output channels per LUT, default 32)");
ABSL_FLAG(bool, sym, false, "symmetric (absmax) grid instead of zero-point (default: on for gptq, as GPTQModel; off otherwise)");
ABSL_FLAG(bool, mse_clip, false, "RTN: search a clipping factor per group minimising the error");
ABSL_FLAG(bool, quantize_lm_head, false, "quantize lm_head too (kept in high precision by default)");
ABSL_FLAG(std::vector<std::string>, label, {}, "submit: labels of the job, comma-separated KEY=VALUE (list --filter selects by them)");
ABSL_FLAG(std::vector<std::string>, include, {}, "comma-separated glob patterns of layers to quantize (default: all linear layers)");
ABSL_FLAG(std::vector<std::string>, exclude, {}, "comma-separated glob patterns of layers to keep in high precision");
ABSL_FLAG(std::vector<std::string>, override, {},
          "rtn: comma-separated GLOB=BITS[/GROUP] rules, other bits (and group size) for matching layers, e.g. '*.down_proj.weight=8'; the first match wins");
ABSL_FLAG(bool, overwrite, false, "replace an existing output");
ABSL_FLAG(bool, json, false, "print machine-readable JSON instead of tables");
ABSL_FLAG(int, threads, 0, "worker threads (0 = one per core)");
ABSL_FLAG(std::string, model, "", "generate: checkpoint to run");
ABSL_FLAG(std::string, tokenizer, "", "tokenizer.json or llama2.c tokenizer.bin (default: the one beside the model)");
ABSL_FLAG(bool, jsonl, false, "tokenize: --text holds one JSON string per line; one id array per line is printed");
ABSL_FLAG(int, vocab_size, 32000, "tokenize: vocabulary size of a llama2.c tokenizer.bin (other formats record theirs)");
ABSL_FLAG(int, steps, 256, "generate: tokens to decode greedily from BOS");
ABSL_FLAG(std::string, gguf_type, "Q8_0", "--format gguf: the ggml type of the linear layers (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS) or a mixture (Q4_K_M, Q5_K_M)");
ABSL_FLAG(bool, imatrix, false, "calibrated methods: also write imatrix.gguf (llama.cpp's importance matrix, for llama-quantize --imatrix)");
ABSL_FLAG(std::string, shard_size, "5G", "tensor data per output safetensors file (5G, 500M, 2Gi: decimal or binary units)");
ABSL_FLAG(std::string, memory_limit, "",
          "quantize: refuse a job planned above this much memory, e.g. 16Gi (default: the cgroup limit, else 80% of RAM; 0: none)");
ABSL_FLAG(std::string, request_id, "", "submit: idempotency key; a retry with the same id returns the same job");
ABSL_FLAG(bool, dry_run, false, "quantize, submit: print the job's resource plan and exit without running it");
ABSL_FLAG(std::string, s3_endpoint, "", "S3-compatible endpoint URL (default: AWS_ENDPOINT_URL, or AWS itself)");
ABSL_FLAG(double, target_bpw, 0, "quantize, submit: choose each layer's setting for the most accurate model at this many bits per linear weight");
ABSL_FLAG(std::string, max_size, "", "quantize, submit: the same under a size of the linear layers (e.g. 3.5G)");
ABSL_FLAG(double, max_kl, 0, "quantize, submit: the same, the smallest model predicted at most this KL to the source");
ABSL_FLAG(std::vector<std::string>, candidates, {},
          "budget jobs, plan: comma-separated settings a layer may get, e.g. gptq-4b-g32,gptq-8b-ch,vq-3b-d2 (default: the format's)");
ABSL_FLAG(std::string, measurement, "", "budget jobs, plan: reuse this measurement.json (written by an earlier budget job or plan)");
ABSL_FLAG(int, sensitivity_windows, 8, "budget jobs, plan: calibration windows each layer's sensitivity is measured on");
ABSL_FLAG(std::string, s3_region, "", "S3 region (default: AWS_REGION, the profile's region, or us-east-1)");

namespace lowbit::cli {

namespace {
std::set<std::string>& GivenFlags() {
  static std::set<std::string>* given = new std::set<std::string>();
  return *given;
}
}  // namespace

void NormalizeFlagNames(int argc, char** argv) {
  GivenFlags().clear();
  for (int i = 1; i < argc; ++i) {
    char* arg = argv[i];
    if (std::strncmp(arg, "--", 2) != 0) continue;
    char* c = arg + 2;
    for (; *c != '\0' && *c != '='; ++c) {
      if (*c == '-') *c = '_';
    }
    GivenFlags().insert(std::string(arg + 2, c));
  }
}

bool FlagGiven(const std::string& name) { return GivenFlags().count(name) > 0 || GivenFlags().count("no" + name) > 0; }

namespace {

// The flag's value, or the method's own default for the flag's 0.
int FlagOr(const absl::Flag<int>& flag, int method_default) {
  const int value = absl::GetFlag(flag);
  return value == 0 ? method_default : value;
}

// The method's parameters from the flags, into the request's oneof.
absl::Status MethodFromFlags(Method method, v1::QuantizeModelRequest* request) {
  const int bits = absl::GetFlag(FLAGS_bits), group_size = absl::GetFlag(FLAGS_group_size);
  switch (method) {
    case Method::kRtn: {
      v1::RtnParams* r = request->mutable_rtn();
      r->set_bits(bits), r->set_group_size(group_size), r->set_symmetric(absl::GetFlag(FLAGS_sym));
      r->set_mse_clip(absl::GetFlag(FLAGS_mse_clip));
      return absl::OkStatus();
    }
    case Method::kInt8:
      request->mutable_int8()->set_symmetric(absl::GetFlag(FLAGS_sym));
      return absl::OkStatus();
    case Method::kGptq: {
      v1::GptqParams* g = request->mutable_gptq();
      g->set_bits(bits), g->set_group_size(group_size);
      // Unset: symmetric (GPTQModel's and AutoGPTQ's default; vLLM's Marlin kernels need it); --nosym turns it off.
      if (FlagGiven("sym")) g->set_symmetric(absl::GetFlag(FLAGS_sym));
      g->set_damp_percent(absl::GetFlag(FLAGS_damp_percent));
      g->set_act_order(absl::GetFlag(FLAGS_act_order)), g->set_static_groups(absl::GetFlag(FLAGS_static_groups));
      return absl::OkStatus();
    }
    case Method::kAwq: {
      v1::AwqParams* a = request->mutable_awq();
      a->set_bits(bits), a->set_group_size(group_size), a->set_symmetric(absl::GetFlag(FLAGS_sym));
      a->set_grid(absl::GetFlag(FLAGS_grid)), a->set_clip(absl::GetFlag(FLAGS_clip));
      return absl::OkStatus();
    }
    case Method::kLut: {
      v1::LutParams* l = request->mutable_lut();
      l->set_bits(bits);
      const std::string mode = absl::GetFlag(FLAGS_mode);
      if (mode == "kmeans") l->set_mode(v1::LutParams::KMEANS);
      else if (mode == "uniform") l->set_mode(v1::LutParams::UNIFORM);
      else if (mode == "unique") l->set_mode(v1::LutParams::UNIQUE);
      else return absl::InvalidArgumentError(absl::StrCat("--mode: unknown mode '", mode, "' (kmeans, uniform, unique)"));
      const std::string granularity = absl::GetFlag(FLAGS_granularity);
      if (granularity == "per_tensor") l->set_granularity(v1::LutParams::PER_TENSOR);
      else if (granularity == "per_grouped_channel") l->set_granularity(v1::LutParams::PER_GROUPED_CHANNEL);
      else return absl::InvalidArgumentError(absl::StrCat("--granularity: unknown '", granularity, "' (per_tensor, per_grouped_channel)"));
      l->set_group_size(group_size), l->set_cluster_dim(absl::GetFlag(FLAGS_cluster_dim));
      l->set_per_channel_scale(absl::GetFlag(FLAGS_per_channel_scale)), l->set_sensitive(absl::GetFlag(FLAGS_sensitive));
      l->set_seed(static_cast<uint32_t>(absl::GetFlag(FLAGS_seed))), l->set_max_iterations(absl::GetFlag(FLAGS_max_iterations));
      return absl::OkStatus();
    }
    case Method::kVq: {
      v1::VqParams* v = request->mutable_vq();
      v->set_dim(absl::GetFlag(FLAGS_dim)), v->set_bits(bits);
      v->set_group_cols(absl::GetFlag(FLAGS_group_cols)), v->set_group_rows(absl::GetFlag(FLAGS_group_rows));
      v->set_em_iterations(absl::GetFlag(FLAGS_em_iterations)), v->set_update_iterations(absl::GetFlag(FLAGS_update_iterations));
      v->set_damp_percent(absl::GetFlag(FLAGS_damp_percent)), v->set_seed(static_cast<uint32_t>(absl::GetFlag(FLAGS_seed)));
      return absl::OkStatus();
    }
    case Method::kOneBit: {
      v1::OneBitParams* b = request->mutable_onebit();
      const std::string decomposition = absl::GetFlag(FLAGS_decomposition);
      if (decomposition == "nmf") b->set_decomposition(v1::OneBitParams::NMF);
      else if (decomposition == "svd") b->set_decomposition(v1::OneBitParams::SVD);
      else return absl::InvalidArgumentError(absl::StrCat("--decomposition: unknown '", decomposition, "' (nmf, svd)"));
      b->set_max_iterations(absl::GetFlag(FLAGS_max_iterations)), b->set_refine_iterations(absl::GetFlag(FLAGS_refine_iterations));
      return absl::OkStatus();
    }
  }
  return absl::InternalError("a method without flags");
}

}  // namespace

absl::StatusOr<v1::QuantizeModelRequest> RequestFromFlags() {
  v1::QuantizeModelRequest request;
  request.set_source_uri(absl::GetFlag(FLAGS_input));
  request.set_destination_uri(absl::GetFlag(FLAGS_output));
  const std::string method = absl::GetFlag(FLAGS_method);
  const std::optional<Method> parsed = ParseMethod(method);
  if (!parsed) {
    return absl::InvalidArgumentError(absl::StrCat("--method: unknown method '", method, "' (rtn, int8, gptq, awq, lut, vq, onebit)"));
  }
  v1::BitBudget* budget = request.mutable_budget();
  if (const double bpw = absl::GetFlag(FLAGS_target_bpw); bpw != 0) budget->set_bits_per_weight(bpw);
  if (const std::string size = absl::GetFlag(FLAGS_max_size); !size.empty()) {
    ASSIGN_OR_RETURN(const uint64_t bytes, ParseByteSize(size));
    budget->set_max_bytes(static_cast<int64_t>(bytes));
  }
  if (const double kl = absl::GetFlag(FLAGS_max_kl); kl != 0) budget->set_max_kl(kl);
  for (const std::string& c : absl::GetFlag(FLAGS_candidates)) budget->add_candidates(c);
  budget->set_measurement_uri(absl::GetFlag(FLAGS_measurement));
  budget->set_sensitivity_windows(absl::GetFlag(FLAGS_sensitivity_windows));
  if (budget->target_case() != v1::BitBudget::TARGET_NOT_SET) {
    // The allocation chooses each layer's method from the candidates.
    if (FlagGiven("method")) return absl::InvalidArgumentError("--method: a budget job takes its methods from --candidates");
  } else {
    RETURN_IF_ERROR(MethodFromFlags(*parsed, &request));
  }
  const std::string format = absl::GetFlag(FLAGS_format);
  const std::optional<OutputFormat> parsed_format = ParseFormat(format);
  if (!parsed_format) return absl::InvalidArgumentError(absl::StrCat("--format: unknown format '", format, "' (auto, gptq, awq, native, gguf)"));
  request.set_output_format(server::ToProto(*parsed_format));
  v1::LayerSelection* layers = request.mutable_layers();
  for (const std::string& p : absl::GetFlag(FLAGS_include)) layers->add_include(p);
  for (const std::string& p : absl::GetFlag(FLAGS_exclude)) layers->add_exclude(p);
  layers->set_quantize_lm_head(absl::GetFlag(FLAGS_quantize_lm_head));
  for (const std::string& rule : absl::GetFlag(FLAGS_override)) {
    // GLOB=BITS[/GROUP], on the job's rtn grid otherwise.
    const std::vector<std::string> parts = absl::StrSplit(rule, absl::MaxSplits('=', 1));
    std::vector<std::string> values = parts.size() == 2 ? absl::StrSplit(parts[1], '/') : std::vector<std::string>{};
    int bits = 0, group_size = FlagOr(FLAGS_group_size, 128);
    if (parts.size() != 2 || parts[0].empty() || values.empty() || values.size() > 2 || !absl::SimpleAtoi(values[0], &bits) ||
        (values.size() == 2 && !absl::SimpleAtoi(values[1], &group_size))) {
      return absl::InvalidArgumentError(absl::StrCat("--override: '", rule, "' is not GLOB=BITS[/GROUP]"));
    }
    v1::LayerOverride* o = layers->add_overrides();
    o->set_pattern(parts[0]);
    *o->mutable_rtn() = request.rtn();
    o->mutable_rtn()->set_bits(bits), o->mutable_rtn()->set_group_size(group_size);
  }
  request.set_overwrite(absl::GetFlag(FLAGS_overwrite));
  request.set_request_id(absl::GetFlag(FLAGS_request_id));
  for (const std::string& label : absl::GetFlag(FLAGS_label)) {
    const std::vector<std::string> kv = absl::StrSplit(label, absl::MaxSplits('=', 1));
    if (kv.size() != 2 || kv[0].empty()) return absl::InvalidArgumentError(absl::StrCat("--label: '", label, "' is not KEY=VALUE"));
    (*request.mutable_labels())[kv[0]] = kv[1];
  }
  request.set_validate_only(absl::GetFlag(FLAGS_dry_run));
  request.set_tokenizer_uri(absl::GetFlag(FLAGS_tokenizer));
  ASSIGN_OR_RETURN(const uint64_t shard_bytes, ParseByteSize(absl::GetFlag(FLAGS_shard_size)));
  if (shard_bytes == 0) return absl::InvalidArgumentError("--shard-size must be positive");
  request.set_shard_size_bytes(static_cast<int64_t>(shard_bytes));
  request.set_gguf_type(absl::GetFlag(FLAGS_gguf_type));
  request.set_write_imatrix(absl::GetFlag(FLAGS_imatrix));
  v1::CalibrationData* c = request.mutable_calibration();
  c->set_text_uri(absl::GetFlag(FLAGS_calib)), c->set_samples(absl::GetFlag(FLAGS_calib_samples));
  c->set_seqlen(absl::GetFlag(FLAGS_calib_seqlen)), c->set_seed(static_cast<uint32_t>(absl::GetFlag(FLAGS_calib_seed)));
  v1::EvaluationRequest* e = request.mutable_evaluation();
  e->set_text_uri(absl::GetFlag(FLAGS_eval_text)), e->set_windows(absl::GetFlag(FLAGS_eval_windows));
  e->set_seqlen(absl::GetFlag(FLAGS_eval_seqlen));
  return request;
}

}  // namespace lowbit::cli
