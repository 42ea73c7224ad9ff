// LUT palettization (Apple coremltools' OpPalettizerConfig): each weight, or each vector of cluster_dim
// weights of consecutive output channels (coremltools' vector palettization), is replaced by an index into a
// lookup table of 2^bits FP16 entries (of cluster_dim values each).
//
// Granularity: one LUT per tensor, or one per group of `group_size` output channels. Modes:
//   kmeans   k-means centroids (exact 1-D dynamic programming for scalars, k-means++ and Lloyd for vectors);
//            with calibration statistics and `sensitive`, every weight counts with the Hessian diagonal of
//            its input (sensitive k-means), so the LUT follows the layer's output error, not its weights;
//   uniform  2^bits entries evenly spaced from the minimum to the maximum;
//   unique   the distinct values themselves; INVALID_ARGUMENT if there are more than 2^bits.
// With per_channel_scale each output channel is divided by its max |w| (stored in FP16) before clustering.
// Codes are chosen against the entries as stored (after FP16 rounding).
#ifndef LOWBIT_CORE_QUANT_LUT_H_
#define LOWBIT_CORE_QUANT_LUT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "core/quant/gptq.h"
#include "core/quant/quantized_tensor.h"
#include "core/tensor/tensor.h"
#include "core/util/job_context.h"

namespace lowbit {

enum class LutMode { kKMeans, kUniform, kUnique };
enum class LutGranularity { kPerTensor, kPerGroupedChannel };

struct LutOptions {
  int bits = 4;                    ///< 1, 2, 3, 4, 6 or 8: 2^bits entries per LUT
  LutMode mode = LutMode::kKMeans;
  LutGranularity granularity = LutGranularity::kPerTensor;
  int64_t group_size = 32;         ///< output channels per LUT (kPerGroupedChannel)
  int cluster_dim = 1;             ///< 1 (scalar LUT), 2 or 4 (vector palettization; divides the output channels and group_size)
  bool per_channel_scale = false;  ///< normalise each output channel by its max |w| first
  bool sensitive = true;           ///< weight k-means by the Hessian diagonal when statistics are given
  uint32_t seed = 0;               ///< k-means++ seeding (vectors)
  int max_iterations = 50;         ///< Lloyd iterations
};

// INVALID_ARGUMENT naming the option.
absl::Status ValidateLutOptions(const LutOptions& options);

// `stats` may be null; it is used only by sensitive k-means. INVALID_ARGUMENT on bad options, non-finite
// weights, output channels (or group_size) not divisible by cluster_dim, or (unique) too many distinct values.
// `context` is checked once per table fitted.
absl::StatusOr<CodebookTensor> QuantizeLut(const Matrix& w, const LutOptions& options, const CalibrationStats* stats,
                                           const JobContext* context = nullptr);

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_LUT_H_
