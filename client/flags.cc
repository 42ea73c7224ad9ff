#include "client/flags.h"

#include <cstring>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, input, "", "checkpoint to read: a path, file:// or s3:// URI (.safetensors, index, llama2.c .bin, or a directory)");
ABSL_FLAG(std::string, output, "", "output directory (path or URI)");
ABSL_FLAG(std::string, method, "rtn", "quantization method: rtn | int8 | gptq");
ABSL_FLAG(double, damp_percent, 0.01, "gptq: diagonal damping as a fraction of its mean");
ABSL_FLAG(bool, act_order, false, "gptq: quantize columns by decreasing Hessian diagonal (desc_act, g_idx)");
ABSL_FLAG(bool, static_groups, false, "gptq: grids from the original weights");
ABSL_FLAG(std::string, calib, "", "gptq: calibration text (path or URI), tokenized with --tokenizer");
ABSL_FLAG(int, calib_samples, 32, "gptq: calibration windows");
ABSL_FLAG(int, calib_seqlen, 128, "gptq: tokens per calibration window");
ABSL_FLAG(int, calib_seed, 0, "gptq: seed choosing the calibration windows");
ABSL_FLAG(std::string, reference, "", "eval: the model to measure KL divergence against (e.g. the unquantized one)");
ABSL_FLAG(std::string, text, "", "eval: text to evaluate on");
ABSL_FLAG(std::string, eval_text, "", "evaluate the result: perplexity and KL to the source on this text");
ABSL_FLAG(int, eval_windows, 16, "evaluation: non-overlapping windows");
ABSL_FLAG(int, eval_seqlen, 128, "evaluation: tokens per window");
ABSL_FLAG(int, bits, 4, "bits per weight code, 2..8 (int8: 8)");
ABSL_FLAG(int, group_size, 128, "input columns per quantization group; -1 = per output channel");
ABSL_FLAG(bool, sym, false, "symmetric (absmax) grid instead of zero-point");
ABSL_FLAG(bool, mse_clip, false, "RTN: search a clipping factor per group minimising the error");
ABSL_FLAG(bool, quantize_lm_head, false, "quantize lm_head too (kept in high precision by default)");
ABSL_FLAG(std::vector<std::string>, include, {}, "comma-separated glob patterns of layers to quantize (default: all linear layers)");
ABSL_FLAG(std::vector<std::string>, exclude, {}, "comma-separated glob patterns of layers to keep in high precision");
ABSL_FLAG(bool, overwrite, false, "replace an existing output");
ABSL_FLAG(bool, json, false, "print machine-readable JSON instead of tables");
ABSL_FLAG(int, threads, 0, "worker threads (0 = one per core)");
ABSL_FLAG(std::string, model, "", "generate: checkpoint to run");
ABSL_FLAG(std::string, tokenizer, "", "generate: llama2.c tokenizer.bin");
ABSL_FLAG(int, steps, 256, "generate: tokens to decode greedily from BOS");
ABSL_FLAG(std::string, s3_endpoint, "", "S3-compatible endpoint URL (default: AWS_ENDPOINT_URL, or AWS itself)");
ABSL_FLAG(std::string, s3_region, "", "S3 region (default: AWS_REGION, the profile's region, or us-east-1)");

namespace lowbit::cli {

void NormalizeFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* arg = argv[i];
    if (std::strncmp(arg, "--", 2) != 0) continue;
    for (char* c = arg + 2; *c != '\0' && *c != '='; ++c) {
      if (*c == '-') *c = '_';
    }
  }
}

absl::StatusOr<QuantizeJobSpec> JobSpecFromFlags() {
  QuantizeJobSpec spec;
  const std::string method = absl::GetFlag(FLAGS_method);
  std::optional<Method> parsed = ParseMethod(method);
  if (!parsed) return absl::InvalidArgumentError(absl::StrCat("--method: unknown method '", method, "' (rtn, int8, gptq)"));
  spec.quant.method = *parsed;
  spec.quant.bits = absl::GetFlag(FLAGS_bits);
  spec.quant.group_size = absl::GetFlag(FLAGS_group_size);
  spec.quant.symmetric = absl::GetFlag(FLAGS_sym);
  spec.quant.mse_clip = absl::GetFlag(FLAGS_mse_clip);
  if (spec.quant.method == Method::kInt8) {
    spec.quant.bits = 8;
    spec.quant.group_size = -1;
  }
  spec.quantize_lm_head = absl::GetFlag(FLAGS_quantize_lm_head);
  spec.include = absl::GetFlag(FLAGS_include);
  spec.exclude = absl::GetFlag(FLAGS_exclude);
  spec.overwrite = absl::GetFlag(FLAGS_overwrite);
  spec.quant.damp_percent = absl::GetFlag(FLAGS_damp_percent);
  spec.quant.act_order = absl::GetFlag(FLAGS_act_order);
  spec.quant.static_groups = absl::GetFlag(FLAGS_static_groups);
  spec.tokenizer_uri = absl::GetFlag(FLAGS_tokenizer);
  spec.calibration = {absl::GetFlag(FLAGS_calib), absl::GetFlag(FLAGS_calib_samples), absl::GetFlag(FLAGS_calib_seqlen),
                      static_cast<uint32_t>(absl::GetFlag(FLAGS_calib_seed))};
  spec.evaluation = {absl::GetFlag(FLAGS_eval_text), absl::GetFlag(FLAGS_eval_windows), absl::GetFlag(FLAGS_eval_seqlen)};
  return spec;
}

}  // namespace lowbit::cli
