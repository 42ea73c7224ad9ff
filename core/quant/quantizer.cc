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

}  // namespace

absl::string_view MethodName(Method method) {
  switch (method) {
    case Method::kRtn: return "rtn";
    case Method::kInt8: return "int8";
  }
  return "?";
}

std::optional<Method> ParseMethod(absl::string_view name) {
  for (Method m : {Method::kRtn, Method::kInt8}) {
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
  if (config.method == Method::kInt8 && (config.bits != 8 || config.group_size != -1)) {
    return absl::InvalidArgumentError("int8: is 8-bit per output channel; bits must be 8 and group_size -1");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Quantizer>> CreateQuantizer(const QuantConfig& config) {
  RETURN_IF_ERROR(ValidateQuantConfig(config));
  RtnOptions options{config.bits, config.group_size, config.symmetric ? GridKind::kSymmetric : GridKind::kAsymmetric,
                     config.mse_clip};
  if (config.method == Method::kInt8 && config.symmetric) options.grid = GridKind::kRestrictedSymmetric;
  return std::unique_ptr<Quantizer>(new RtnQuantizer(options));
}

}  // namespace lowbit
