#include "core/quant/quantizer.h"

#include <functional>

#include "absl/strings/str_cat.h"
#include "core/quant/awq.h"
#include "core/quant/ggml_grid.h"
#include "core/quant/rtn.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// Every method is a function of the weights and the optional statistics, bound to its options.
class FunctionQuantizer final : public Quantizer {
 public:
  using Fn = std::function<absl::StatusOr<QuantizedLayer>(const Matrix& w, const CalibrationStats* stats, const JobContext* context)>;
  explicit FunctionQuantizer(Fn fn) : fn_(std::move(fn)) {}
  absl::StatusOr<QuantizedLayer> Quantize(const Matrix& w, const CalibrationStats* stats,
                                          const JobContext* context) const override {
    // Every method divides by the layer's dimensions somewhere.
    if (w.rows <= 0 || w.cols <= 0) return absl::InvalidArgumentError(absl::StrCat("an empty ", w.rows, " x ", w.cols, " matrix"));
    return fn_(w, stats, context);
  }

 private:
  const Fn fn_;
};

// Checks that a calibrated method was given statistics.
absl::Status NeedStats(const CalibrationStats* stats, absl::string_view method) {
  if (stats == nullptr) return absl::FailedPreconditionError(absl::StrCat(method, " needs calibration statistics"));
  return absl::OkStatus();
}

constexpr Method kMethods[] = {Method::kRtn, Method::kInt8, Method::kGptq, Method::kAwq,
                               Method::kLut, Method::kVq,   Method::kOneBit};

}  // namespace

absl::string_view MethodName(Method method) {
  switch (method) {
    case Method::kRtn: return "rtn";
    case Method::kInt8: return "int8";
    case Method::kGptq: return "gptq";
    case Method::kAwq: return "awq";
    case Method::kLut: return "lut";
    case Method::kVq: return "vq";
    case Method::kOneBit: return "onebit";
  }
  return "?";
}

std::optional<Method> ParseMethod(absl::string_view name) {
  for (Method m : kMethods) {
    if (MethodName(m) == name) return m;
  }
  return std::nullopt;
}

bool IsUniformGridMethod(Method method) {
  return method == Method::kRtn || method == Method::kInt8 || method == Method::kGptq || method == Method::kAwq;
}

CalibrationUse CalibrationUseOf(const QuantConfig& config) {
  switch (config.method) {
    case Method::kGptq:
    case Method::kAwq:
    case Method::kVq: return CalibrationUse::kRequired;
    case Method::kLut:
      return config.lut.sensitive && config.lut.mode == LutMode::kKMeans ? CalibrationUse::kIfGiven : CalibrationUse::kNone;
    case Method::kOneBit: return config.onebit.refine_iterations > 0 ? CalibrationUse::kRequired : CalibrationUse::kNone;
    default: return CalibrationUse::kNone;
  }
}

absl::Status ValidateQuantConfig(const QuantConfig& config) {
  switch (config.method) {
    case Method::kLut: return ValidateLutOptions(config.lut);
    case Method::kVq: return ValidateVqOptions(config.vq);
    case Method::kOneBit:
      if (config.onebit.max_iterations < 1) return absl::InvalidArgumentError("max_iterations: must be at least 1");
      if (config.onebit.refine_iterations < 0) return absl::InvalidArgumentError("refine_iterations: must not be negative");
      return absl::OkStatus();
    default: break;
  }
  if (config.bits < 2 || config.bits > 8) {
    return absl::InvalidArgumentError(absl::StrCat("bits: must be in 2..8, got ", config.bits));
  }
  if (config.group_size == 0 || config.group_size < -1) {
    return absl::InvalidArgumentError(absl::StrCat("group_size: must be -1 (per channel) or positive, got ", config.group_size));
  }
  if (config.method == Method::kGptq && !(config.damp_percent > 0 && config.damp_percent < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("damp_percent: must be in (0, 1), got ", config.damp_percent));
  }
  if (config.method == Method::kAwq && config.awq_grid < 1) {
    return absl::InvalidArgumentError(absl::StrCat("grid: must be at least 1, got ", config.awq_grid));
  }
  if (config.method == Method::kInt8 && (config.bits != 8 || config.group_size != -1)) {
    return absl::InvalidArgumentError("int8: is 8-bit per output channel; bits must be 8 and group_size -1");
  }
  return absl::OkStatus();
}

GptqOptions GptqOptionsOf(const QuantConfig& c) {
  return {c.bits, c.group_size, c.symmetric, c.damp_percent, c.act_order, c.static_groups, 128, c.ggml};
}

AwqOptions AwqOptionsOf(const QuantConfig& c) {
  return {c.bits, c.group_size, !c.symmetric, c.awq_grid, c.awq_clip, c.ggml};
}

absl::StatusOr<std::unique_ptr<Quantizer>> CreateQuantizer(const QuantConfig& config) {
  RETURN_IF_ERROR(ValidateQuantConfig(config));
  FunctionQuantizer::Fn fn;
  switch (config.method) {
    case Method::kGptq: {
      fn = [o = GptqOptionsOf(config)](const Matrix& w, const CalibrationStats* stats, const JobContext* context) -> absl::StatusOr<QuantizedLayer> {
        RETURN_IF_ERROR(NeedStats(stats, "gptq"));
        ASSIGN_OR_RETURN(GptqResult r, QuantizeGptq(w, *stats, o, context));
        return std::move(r.layer);
      };
      break;
    }
    case Method::kAwq:
      fn = [o = AwqOptionsOf(config)](const Matrix& w, const CalibrationStats* stats, const JobContext* context) -> absl::StatusOr<QuantizedLayer> {
        RETURN_IF_ERROR(NeedStats(stats, "awq"));
        return QuantizeAwqLayer(w, *stats, o.clip, o);
      };
      break;
    case Method::kLut:
      fn = [o = config.lut](const Matrix& w, const CalibrationStats* stats, const JobContext* context) -> absl::StatusOr<QuantizedLayer> {
        return QuantizeLut(w, o, stats, context);
      };
      break;
    case Method::kVq:
      fn = [o = config.vq](const Matrix& w, const CalibrationStats* stats, const JobContext* context) -> absl::StatusOr<QuantizedLayer> {
        RETURN_IF_ERROR(NeedStats(stats, "vq"));
        return QuantizeVq(w, *stats, o, context);
      };
      break;
    case Method::kOneBit:
      fn = [o = config.onebit](const Matrix& w, const CalibrationStats* stats, const JobContext* context) -> absl::StatusOr<QuantizedLayer> {
        return QuantizeOneBit(w, o, stats);
      };
      break;
    case Method::kRtn:
    case Method::kInt8: {
      RtnOptions o{config.bits, config.group_size, config.symmetric ? GridKind::kSymmetric : GridKind::kAsymmetric,
                   config.mse_clip};
      if (config.method == Method::kInt8 && config.symmetric) o.grid = GridKind::kRestrictedSymmetric;
      fn = [o, ggml = config.ggml](const Matrix& w, const CalibrationStats* stats, const JobContext*) -> absl::StatusOr<QuantizedLayer> {
        if (ggml == nullptr) return QuantizeRtn(w, o);
        // Given statistics, the block search weighs each column by its inputs' second moment (H's diagonal).
        std::vector<float> importance;
        if (stats != nullptr && stats->cols == w.cols && stats->hessian.size() == static_cast<size_t>(w.cols * w.cols)) {
          importance = HessianDiagonal(*stats);
        }
        return QuantizeGgmlRtn(w, *ggml, importance.empty() ? nullptr : importance.data());
      };
      break;
    }
  }
  return std::unique_ptr<Quantizer>(new FunctionQuantizer(std::move(fn)));
}

}  // namespace lowbit
