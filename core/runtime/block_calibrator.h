// BlockCalibrator: the block-wise calibration pipeline every calibrated method runs through (the GPTQ
// papers' and AutoGPTQ's scheme). The calibration windows are embedded once; then, block by block in
// order, only that block's tensors are read (the next block's are prefetched during this one's last pass),
// the inputs of each linear group are captured with batched passes over row chunks of all windows, and
// the block is quantized:
// - sequential methods (gptq, vq, sensitive lut, refined onebit) true-sequentially — q/k/v, then o, then
//   gate/up, then down, each group on inputs through the groups quantized before it, the layers of one
//   group in parallel on the pool — and the hidden states advance through the quantized block;
// - AWQ on the float block's activations (as AutoAWQ): the scale searches on the attention's and the MLP's
//   outputs, the folds, the clip search; the hidden states advance through the float block;
// - measurement (bit allocation, core/job/bit_budget.h): each included layer's `measure_tasks` tasks run in
//   parallel on the pool with the statistics of the float model's inputs; nothing is replaced, so every
//   group and block sees the float model's activations, and the blocks come back without layers.
// Memory: the hidden states (two rows x hidden_size matrices), one block in float32 and as stored, the next
// block as stored, one group's statistics, and one chunk's activations; never a whole model.
//
// Not thread-safe; Next() is called from one thread, block 0 first.
#ifndef LOWBIT_CORE_RUNTIME_BLOCK_CALIBRATOR_H_
#define LOWBIT_CORE_RUNTIME_BLOCK_CALIBRATOR_H_

#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/checkpoint/architecture.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/quant/awq.h"
#include "core/quant/gptq.h"
#include "core/quant/quantized_tensor.h"
#include "core/runtime/decoder_block.h"
#include "core/util/job_context.h"
#include "core/util/thread_pool.h"

namespace lowbit {

// A layer quantized on calibration data, with what the report should say about it.
struct CalibratedLayer {
  QuantizedLayer tensor;
  std::string note;
  std::optional<double> relative_error;  ///< ‖W − Ŵ‖/‖W‖ against the weights it approximates (AWQ's: the scaled ones); set by the calibrator if the method does not
  double seconds = 0;                    ///< time spent quantizing this layer
  // The layer's inputs as calibration saw them (before AWQ's scales): Σ x² per input column over
  // `input_tokens` tokens, what llama.cpp's imatrix records.
  std::vector<float> input_sum2;
  int64_t input_tokens = 0;
};

// Quantizes one layer (by its full weight name) from the statistics of its inputs.
using LayerQuantizeFn = std::function<absl::StatusOr<CalibratedLayer>(
    const std::string& name, const Matrix& w, const CalibrationStats& stats, const JobContext* context)>;
// Measures task `task` of one layer (e.g. the error of one candidate setting); called concurrently.
using LayerMeasureFn = std::function<absl::Status(const std::string& name, const Matrix& w, const CalibrationStats& stats,
                                                  int task, const JobContext* context)>;

struct BlockCalibratorOptions {
  enum class Mode { kSequential, kAwq, kMeasure };
  Mode mode = Mode::kSequential;
  LayerQuantizeFn quantize;  ///< kSequential: the method
  LayerMeasureFn measure;    ///< kMeasure: what to measure per layer
  int measure_tasks = 1;     ///< kMeasure: tasks per layer
  AwqOptions awq;            ///< kAwq: the method's options
  std::function<const GgmlTypeTraits*(const std::string&)> awq_ggml;  ///< kAwq: a layer's ggml type, when not awq.ggml
  std::function<bool(const std::string&)> include;  ///< full weight names to quantize; the rest stay float
  ThreadPool* pool = nullptr;        ///< runs the layers of one group in parallel; null: one after another
  JobContext* context = nullptr;     ///< checked per block, per row chunk and inside the methods
  int64_t rows_per_chunk = kDefaultRowsPerChunk;  ///< rows (tokens, whole windows) per batched pass
};

// One block's results.
struct CalibratedBlock {
  int index = 0;
  std::map<std::string, CalibratedLayer> layers;       ///< quantized layers by weight name
  std::map<std::string, std::vector<float>> replaced;  ///< tensors whose float values calibration changed (AWQ's folds)
  std::vector<Tensor> tensors;                         ///< the block's other tensors as read (norms, unquantized layers), for the output stream
};

class BlockCalibrator {
 public:
  // Reads the embeddings of the windows' tokens. UNIMPLEMENTED for an architecture not in the table,
  // INVALID_ARGUMENT for a config or windows the block cannot run.
  static absl::StatusOr<std::unique_ptr<BlockCalibrator>> Create(const CheckpointReader& reader,
                                                                 const std::vector<std::vector<int>>& windows,
                                                                 BlockCalibratorOptions options);
  ~BlockCalibrator();

  int num_blocks() const { return static_cast<int>(geometry_.layers); }
  // The next block's index (num_blocks() when done).
  int next_block() const { return next_; }
  // Calibrates and quantizes the next block and advances the hidden states past it.
  absl::StatusOr<CalibratedBlock> Next();
  // Hidden states entering the next block, rows = tokens of all windows.
  const Matrix& hidden_states() const { return x_; }
  // Goes on from `block` with the hidden states entering it, as an interrupted run saved them: the blocks
  // after give the same results as if this calibrator had run every block before. Only before the first
  // Next(); INVALID_ARGUMENT for a block out of range or hidden states of another shape.
  absl::Status ResumeAt(int block, Matrix hidden);

 private:
  using Chunk = RowChunk;
  BlockCalibrator(const CheckpointReader& reader, const Architecture& arch, const BlockGeometry& g,
                  BlockCalibratorOptions options)
      : reader_(reader), arch_(arch), geometry_(g), options_(std::move(options)) {}
  void Prefetch(int block);
  absl::Status Sequential(BlockWeights& w, CalibratedBlock* out);
  absl::Status Awq(BlockWeights& w, CalibratedBlock* out);
  // Quantizes the included layers of `group` in parallel from `stats`; replaces them in `w` by their
  // dequantized values.
  absl::Status QuantizeGroup(const LinearGroup& group, const CalibrationStats& stats, BlockWeights* w,
                             CalibratedBlock* out);
  // kMeasure: runs the measure tasks of `names` (of block `prefix`) in parallel.
  absl::Status MeasureGroup(const std::string& prefix, const std::vector<std::string>& names, const CalibrationStats& stats,
                            BlockWeights& w);
  bool Needs(const LinearGroup& group) const;
  absl::Status Check() const { return CheckCancelled(options_.context); }

  const CheckpointReader& reader_;
  const Architecture& arch_;
  const BlockGeometry geometry_;
  const BlockCalibratorOptions options_;
  std::vector<Chunk> chunks_;
  Matrix x_;
  int next_ = 0;
  std::future<absl::StatusOr<std::vector<Tensor>>> prefetch_;  ///< the next block as stored
};

}  // namespace lowbit

#endif  // LOWBIT_CORE_RUNTIME_BLOCK_CALIBRATOR_H_
