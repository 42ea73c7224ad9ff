// Quantizer: turns one float weight matrix into a QuantizedLayer. Quantizers do no I/O.
//
// A quantizer is created once per job from a validated QuantConfig and is then immutable, so one
// instance serves all worker threads concurrently. `stats` carries calibration statistics for the
// methods that need them (nullptr for data-free methods such as RTN and INT8). AWQ's quantizer is the
// layer-level half (clip search and quantization of weights whose scales are already applied); the
// scale search and folding run on the whole model (core/runtime/calibration.h).
#ifndef LOWBIT_CORE_QUANT_QUANTIZER_H_
#define LOWBIT_CORE_QUANT_QUANTIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "core/quant/awq.h"
#include "core/quant/gptq.h"
#include "core/quant/lut.h"
#include "core/quant/onebit.h"
#include "core/quant/vq.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/tensor.h"

namespace lowbit {

enum class Method { kRtn, kInt8, kGptq, kAwq, kLut, kVq, kOneBit };

absl::string_view MethodName(Method method);
std::optional<Method> ParseMethod(absl::string_view name);

// One config for every method; each method reads its own fields. The uniform-grid fields (bits,
// group_size, symmetric) are those of RTN, INT8, GPTQ and AWQ; LUT, VQ and OneBit have their own structs.
struct QuantConfig {
  Method method = Method::kRtn;
  int bits = 4;              ///< 2..8 (INT8: 8)
  int64_t group_size = 128;  ///< input columns per group, -1 = per output channel (INT8: -1)
  bool symmetric = false;    ///< absmax grid instead of zero-point
  bool mse_clip = false;     ///< RTN only: search a clipping factor per group
  double damp_percent = 0.01;  ///< GPTQ: diagonal damping as a fraction of its mean
  bool act_order = false;      ///< GPTQ: desc_act, columns by decreasing Hessian diagonal (g_idx)
  bool static_groups = false;  ///< GPTQ: grids from the original weights
  const GgmlTypeTraits* ggml = nullptr;  ///< RTN, GPTQ, AWQ: codes on this ggml type's blocks (GGUF output)
  int awq_grid = 20;           ///< AWQ: α points of the scale search
  bool awq_clip = true;        ///< AWQ: clip search
  LutOptions lut;
  VqOptions vq;
  OneBitOptions onebit;
};

// Whether a method uses calibration statistics: never, when the job has calibration data, or always.
enum class CalibrationUse { kNone, kIfGiven, kRequired };
CalibrationUse CalibrationUseOf(const QuantConfig& config);
// True for methods whose result is a uniform grid (packable as GPTQ or AWQ).
bool IsUniformGridMethod(Method method);
// GPTQ's and AWQ's options from the shared fields.
GptqOptions GptqOptionsOf(const QuantConfig& config);
AwqOptions AwqOptionsOf(const QuantConfig& config);

// INVALID_ARGUMENT naming the offending field ("bits", "group_size", ...).
absl::Status ValidateQuantConfig(const QuantConfig& config);

class Quantizer {
 public:
  virtual ~Quantizer() = default;
  // `context` (may be null) is checked inside the method's long loops.
  virtual absl::StatusOr<QuantizedLayer> Quantize(const Matrix& w, const CalibrationStats* stats,
                                                  const JobContext* context = nullptr) const = 0;
};

absl::StatusOr<std::unique_ptr<Quantizer>> CreateQuantizer(const QuantConfig& config);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_QUANTIZER_H_
