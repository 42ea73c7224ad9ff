// Bit budgets: the most accurate model that fits a size, chosen per linear layer from measurement.
//
// 1. Candidates: settings a layer may get (method x bits x group size), named like "gptq-4b-g32"
//    (ParseCandidate), each packed by the job's output format, whose tensor specs give its exact bits.
// 2. Measurement (MeasureLayers), one block-wise pass over the calibration windows on the float model's
//    activations (core/runtime/block_calibrator.h, kMeasure): for every layer and candidate, the layer's
//    output error e = ½·tr(ΔW H ΔWᵀ) = the mean of ‖ΔW x‖² over the calibration tokens (H = 2/n Σ x xᵀ),
//    the candidates of each layer quantized in parallel on the pool.
// 3. Sensitivity: how a layer's output error becomes the model's KL. Each layer alone is perturbed by a
//    probe (RTN 4-bit g32, zero point), and the mean KL of the perturbed model to the float model is
//    measured on the first calibration windows: s = KL_probe / e_probe. The model's KL under a choice of
//    settings is predicted as Σ_layers s·e(setting): second order in each layer's output error, additive
//    across layers (both stated assumptions, checked end to end by tests/e2e/budget_test.py). Cost: one
//    evaluation of the model per layer.
// 4. Allocation (PlanBudget): a multiple-choice knapsack over the layers, cost s·e, weight the exact bits
//    (core/quant/bit_allocation.h), for a bits-per-weight or byte budget, or the smallest model under a KL.
//
// A Measurement is written into the job's output (measurement.json) and can be given to later jobs on the
// same checkpoint, calibration and candidates (BitBudget::measurement_uri) to skip steps 2 and 3.
#ifndef LOWBIT_CORE_JOB_BIT_BUDGET_H_
#define LOWBIT_CORE_JOB_BIT_BUDGET_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/pack/format_registry.h"
#include "core/quant/quantizer.h"
#include "core/util/job_context.h"
#include "core/util/thread_pool.h"

namespace lowbit {

// What a budget job is asked for: exactly one of the three targets.
struct BitBudget {
  double bits_per_weight = 0;  ///< mean stored bits per weight over the allocated linear layers
  uint64_t max_bytes = 0;      ///< stored bytes of the allocated linear layers
  double max_kl = 0;           ///< the smallest allocation whose predicted KL is at most this
  std::vector<std::string> candidates;  ///< candidate names; empty: DefaultCandidates(format)
  std::string measurement_uri;          ///< a measurement.json to reuse instead of measuring
  int sensitivity_windows = 8;          ///< calibration windows each layer's probe is evaluated on

  bool active() const { return bits_per_weight > 0 || max_bytes > 0 || max_kl > 0; }
};

// INVALID_ARGUMENT naming the budget field.
absl::Status ValidateBudget(const BitBudget& budget, OutputFormat format);
// Candidates `format` can hold (native or gptq only), INVALID_ARGUMENT naming the first that it cannot.
absl::Status ValidateCandidates(const std::vector<std::string>& candidates, OutputFormat format);

// "METHOD-Nb[-gG|-ch][-sym][-ao][-dD]": gptq, rtn: N-bit codes, groups of G input columns or per output
// channel (default g128), zero point unless -sym, gptq's act order with -ao; lut: N-bit k-means tables per tensor, or per G output
// channels (-gG), sensitive; vq: N bits per dimension of D-dimensional vectors (default d2); "onebit".
absl::StatusOr<QuantConfig> ParseCandidate(absl::string_view name);
// The candidates a budget job uses when it names none: every setting the format's engines load.
std::vector<std::string> DefaultCandidates(OutputFormat format);

// Mean ‖(W − Ŵ) x‖² over the tokens `stats` accumulated (H = 2/n Σ x xᵀ).
double LayerOutputError(const Matrix& w, const QuantizedLayer& q, const CalibrationStats& stats);

struct LayerMeasurement {
  std::string name;  ///< the weight's name
  int64_t rows = 0, cols = 0;
  std::vector<uint64_t> bits;  ///< per candidate: stored bits in the output format; 0 = the format cannot hold it
  std::vector<double> error;   ///< per candidate: mean ‖ΔW x‖² per calibration token
  double probe_error = 0;      ///< the probe's (RTN 4-bit g32)
  double probe_kl = 0;         ///< mean KL to the float model with only this layer probed

  double sensitivity() const { return probe_error > 0 ? probe_kl / probe_error : 0; }
  double predicted_kl(int candidate) const { return sensitivity() * error[candidate]; }
};

struct Measurement {
  std::string key;  ///< what it was measured on: model shapes, calibration, candidates, format (MeasurementKey)
  std::vector<std::string> candidates;
  std::vector<LayerMeasurement> layers;  ///< in streaming order; only layers some candidate can be written with
  double seconds = 0;

  nlohmann::json ToJson() const;
  // INVALID_ARGUMENT for a malformed measurement.
  static absl::StatusOr<Measurement> FromJson(absl::string_view text);
};

// A digest of everything a measurement depends on but the weights' values: the checkpoint's tensor names,
// shapes and dtypes, the calibration (text, windows, length, seed), the candidates and the format.
std::string MeasurementKey(const CheckpointReader& reader, const std::string& calibration, const std::vector<std::string>& candidates,
                           OutputFormat format, int sensitivity_windows);

struct MeasureOptions {
  ThreadPool* pool = nullptr;
  JobContext* context = nullptr;  ///< told the block and layer, checked per block and per probe
  int64_t rows_per_chunk = 0;     ///< 0: the calibrator's default
  int sensitivity_windows = 8;
};

// Measures the layers `include` accepts (full weight names) on `windows` for `candidates` in `format`.
absl::StatusOr<Measurement> MeasureLayers(const CheckpointReader& reader, const std::vector<std::vector<int>>& windows,
                                          OutputFormat format, const std::vector<std::string>& candidates,
                                          const std::function<bool(const std::string&)>& include,
                                          const MeasureOptions& options);

struct BudgetPlan {
  std::vector<int> choice;   ///< per measured layer, its candidate
  uint64_t budget_bits = 0;  ///< the budget the choice was made under
  uint64_t bits = 0;         ///< what the choice takes
  uint64_t weights = 0;      ///< weights of the measured layers
  double predicted_kl = 0;
  double lower_bound_kl = 0;  ///< no choice within the budget is predicted below this
  bool exact = false;         ///< the allocator's optimum (not only within the bound)

  double bits_per_weight() const { return weights ? static_cast<double>(bits) / static_cast<double>(weights) : 0; }
};

// OUT_OF_RANGE when even the smallest candidates exceed the budget (the message gives the smallest
// achievable), or no allocation reaches max_kl (the message gives the least predicted KL).
absl::StatusOr<BudgetPlan> PlanBudget(const Measurement& m, const BitBudget& budget);
// Every layer on candidate `c` (where the format holds it; else its smallest offered setting).
BudgetPlan UniformPlan(const Measurement& m, int c);

}  // namespace lowbit

#endif  // LOWBIT_CORE_JOB_BIT_BUDGET_H_
