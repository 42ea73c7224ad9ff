#include "client/flags.h"

#include <cstring>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, input, "", "checkpoint to read: a path, file:// or s3:// URI (.safetensors, index, llama2.c .bin, or a directory)");
ABSL_FLAG(std::string, output, "", "output directory (path or URI)");
ABSL_FLAG(std::string, method, "rtn", "quantization method: rtn | int8");
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
  if (!parsed) return absl::InvalidArgumentError(absl::StrCat("--method: unknown method '", method, "' (rtn, int8)"));
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
  return spec;
}

}  // namespace lowbit::cli
