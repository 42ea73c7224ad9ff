// Quantizer: turns one float weight matrix into a QuantizedTensor. Quantizers do no I/O.
//
// A quantizer is created once per job from a validated QuantConfig and is then immutable, so one
// instance serves all worker threads concurrently. `stats` carries calibration statistics for the
// methods that need them (nullptr for data-free methods such as RTN and INT8).
#ifndef LOWBIT_CORE_QUANT_QUANTIZER_H_
#define LOWBIT_CORE_QUANT_QUANTIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "core/quant/gptq.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/tensor.h"

namespace lowbit {

enum class Method { kRtn, kInt8, kGptq };

absl::string_view MethodName(Method method);
std::optional<Method> ParseMethod(absl::string_view name);

struct QuantConfig {
  Method method = Method::kRtn;
  int bits = 4;              ///< 2..8 (INT8: 8)
  int64_t group_size = 128;  ///< input columns per group, -1 = per output channel (INT8: -1)
  bool symmetric = false;    ///< absmax grid instead of zero-point
  bool mse_clip = false;     ///< RTN only: search a clipping factor per group
  double damp_percent = 0.01;  ///< GPTQ: diagonal damping as a fraction of its mean
  bool act_order = false;      ///< GPTQ: desc_act, columns by decreasing Hessian diagonal (g_idx)
  bool static_groups = false;  ///< GPTQ: grids from the original weights
};

// INVALID_ARGUMENT naming the offending field ("bits", "group_size", ...).
absl::Status ValidateQuantConfig(const QuantConfig& config);

class Quantizer {
 public:
  virtual ~Quantizer() = default;
  virtual absl::StatusOr<QuantizedTensor> Quantize(const Matrix& w, const CalibrationStats* stats) const = 0;
};

absl::StatusOr<std::unique_ptr<Quantizer>> CreateQuantizer(const QuantConfig& config);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_QUANTIZER_H_
