#include "core/quant/quantizer.h"

#include "absl/strings/str_cat.h"
#include "core/quant/rtn.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

class RtnQuantizer final : public Quantizer {
 public:
  explicit RtnQuantizer(RtnOptions options) : options_(options) {}
  absl::StatusOr<QuantizedTensor> Quantize(const Matrix& w, const CalibrationStats*) const override {
    return QuantizeRtn(w, options_);
  }

 private:
  const RtnOptions options_;
};

class GptqQuantizer final : public Quantizer {
 public:
  explicit GptqQuantizer(GptqOptions options) : options_(options) {}
  absl::StatusOr<QuantizedTensor> Quantize(const Matrix& w, const CalibrationStats* stats) const override {
    if (stats == nullptr) return absl::FailedPreconditionError("gptq needs calibration statistics");
    ASSIGN_OR_RETURN(GptqResult r, QuantizeGptq(w, *stats, options_));
    return std::move(r.tensor);
  }

 private:
  const GptqOptions options_;
};

}  // namespace

absl::string_view MethodName(Method method) {
  switch (method) {
    case Method::kRtn: return "rtn";
    case Method::kInt8: return "int8";
    case Method::kGptq: return "gptq";
  }
  return "?";
}

std::optional<Method> ParseMethod(absl::string_view name) {
  for (Method m : {Method::kRtn, Method::kInt8, Method::kGptq}) {
    if (MethodName(m) == name) return m;
  }
  return std::nullopt;
}

absl::Status ValidateQuantConfig(const QuantConfig& config) {
  if (config.bits < 2 || config.bits > 8) {
    return absl::InvalidArgumentError(absl::StrCat("bits: must be in 2..8, got ", config.bits));
  }
  if (config.group_size == 0 || config.group_size < -1) {
    return absl::InvalidArgumentError(absl::StrCat("group_size: must be -1 (per channel) or positive, got ", config.group_size));
  }
  if (config.method == Method::kGptq && !(config.damp_percent > 0 && config.damp_percent < 1)) {
    return absl::InvalidArgumentError(absl::StrCat("damp_percent: must be in (0, 1), got ", config.damp_percent));
  }
  if (config.method == Method::kInt8 && (config.bits != 8 || config.group_size != -1)) {
    return absl::InvalidArgumentError("int8: is 8-bit per output channel; bits must be 8 and group_size -1");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Quantizer>> CreateQuantizer(const QuantConfig& config) {
  RETURN_IF_ERROR(ValidateQuantConfig(config));
  if (config.method == Method::kGptq) {
    return std::unique_ptr<Quantizer>(new GptqQuantizer({config.bits, config.group_size, config.symmetric,
                                                         config.damp_percent, config.act_order, config.static_groups, 128}));
  }
  RtnOptions options{config.bits, config.group_size, config.symmetric ? GridKind::kSymmetric : GridKind::kAsymmetric,
                     config.mse_clip};
  if (config.method == Method::kInt8 && config.symmetric) options.grid = GridKind::kRestrictedSymmetric;
  return std::unique_ptr<Quantizer>(new RtnQuantizer(options));
}

}  // namespace lowbit
