#include "core/quant/quantizer.h"

#include "absl/strings/str_cat.h"
#include "core/quant/awq.h"
#include "core/quant/rtn.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

class RtnQuantizer final : public Quantizer {
 public:
  explicit RtnQuantizer(RtnOptions options) : options_(options) {}
  absl::StatusOr<QuantizedLayer> Quantize(const Matrix& w, const CalibrationStats*) const override {
    return QuantizeRtn(w, options_);
  }

 private:
  const RtnOptions options_;
};

// Checks that a calibrated method was given statistics.
absl::Status NeedStats(const CalibrationStats* stats, absl::string_view method) {
  if (stats == nullptr) return absl::FailedPreconditionError(absl::StrCat(method, " needs calibration statistics"));
  return absl::OkStatus();
}

class GptqQuantizer final : public Quantizer {
 public:
  explicit GptqQuantizer(GptqOptions options) : options_(options) {}
  absl::StatusOr<QuantizedLayer> Quantize(const Matrix& w, const CalibrationStats* stats) const override {
    RETURN_IF_ERROR(NeedStats(stats, "gptq"));
    ASSIGN_OR_RETURN(GptqResult r, QuantizeGptq(w, *stats, options_));
    return std::move(r.tensor);
  }

 private:
  const GptqOptions options_;
};

class AwqQuantizer final : public Quantizer {
 public:
  explicit AwqQuantizer(AwqOptions options) : options_(options) {}
  absl::StatusOr<QuantizedLayer> Quantize(const Matrix& w, const CalibrationStats* stats) const override {
    RETURN_IF_ERROR(NeedStats(stats, "awq"));
    return QuantizeAwqLayer(w, *stats, options_.clip, options_);
  }

 private:
  const AwqOptions options_;
};

class LutQuantizer final : public Quantizer {
 public:
  explicit LutQuantizer(LutOptions options) : options_(options) {}
  absl::StatusOr<QuantizedLayer> Quantize(const Matrix& w, const CalibrationStats* stats) const override {
    return QuantizeLut(w, options_, stats);
  }

 private:
  const LutOptions options_;
};

class VqQuantizer final : public Quantizer {
 public:
  explicit VqQuantizer(VqOptions options) : options_(options) {}
  absl::StatusOr<QuantizedLayer> Quantize(const Matrix& w, const CalibrationStats* stats) const override {
    RETURN_IF_ERROR(NeedStats(stats, "vq"));
    return QuantizeVq(w, *stats, options_);
  }

 private:
  const VqOptions options_;
};

class OneBitQuantizer final : public Quantizer {
 public:
  explicit OneBitQuantizer(OneBitOptions options) : options_(options) {}
  absl::StatusOr<QuantizedLayer> Quantize(const Matrix& w, const CalibrationStats* stats) const override {
    return QuantizeOneBit(w, options_, stats);
  }

 private:
  const OneBitOptions options_;
};

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

int NominalBits(const QuantConfig& config) {
  switch (config.method) {
    case Method::kLut: return config.lut.bits;
    case Method::kVq: return config.vq.bits;
    case Method::kOneBit: return 1;
    default: return config.bits;
  }
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

AwqOptions AwqOptionsOf(const QuantConfig& c) {
  return {c.bits, c.group_size, !c.symmetric, c.awq_grid, c.awq_clip};
}

absl::StatusOr<std::unique_ptr<Quantizer>> CreateQuantizer(const QuantConfig& config) {
  RETURN_IF_ERROR(ValidateQuantConfig(config));
  switch (config.method) {
    case Method::kGptq:
      return std::unique_ptr<Quantizer>(new GptqQuantizer({config.bits, config.group_size, config.symmetric,
                                                           config.damp_percent, config.act_order, config.static_groups, 128}));
    case Method::kAwq: return std::unique_ptr<Quantizer>(new AwqQuantizer(AwqOptionsOf(config)));
    case Method::kLut: return std::unique_ptr<Quantizer>(new LutQuantizer(config.lut));
    case Method::kVq: return std::unique_ptr<Quantizer>(new VqQuantizer(config.vq));
    case Method::kOneBit: return std::unique_ptr<Quantizer>(new OneBitQuantizer(config.onebit));
    default: break;
  }
  RtnOptions options{config.bits, config.group_size, config.symmetric ? GridKind::kSymmetric : GridKind::kAsymmetric,
                     config.mse_clip};
  if (config.method == Method::kInt8 && config.symmetric) options.grid = GridKind::kRestrictedSymmetric;
  return std::unique_ptr<Quantizer>(new RtnQuantizer(options));
}

}  // namespace lowbit
