// RunQuantizeJob: one quantization job end to end, used by `lowbit quantize` and by every server job,
// so both produce byte-identical output.
//
// Phases: plan (validate, open the checkpoint's headers, the resource plan checked against the memory
// limit, the tensor plan) → stream → write → evaluate → commit the report.
// The stream: the calling thread reads one tensor at a time (with ranged reads, so the next tensor
// downloads while workers quantize the ones before it) and hands it to the worker pool (convert → check →
// quantize → pack → measure error), keeping at most `max_tensors_in_flight` tensors and
// `max_bytes_in_flight` bytes in memory; results are written in order into safetensors shards, each
// committed as it fills (core/checkpoint/safetensors.h). For calibrated methods the block calibrator (core/runtime/block_calibrator.h) runs
// each decoder block just before the stream reaches it and hands over the block's tensors and results.
// The output directory is servable as it is: shards (+ index), config.json with the engines'
// quantization_config, quantize_config.json, the source's tokenizer and generation files, a model card
// (README.md), and lowbit_report.json last as the commit marker. On failure or cancellation everything this
// job wrote is deleted.
#ifndef LOWBIT_CORE_JOB_QUANTIZE_JOB_H_
#define LOWBIT_CORE_JOB_QUANTIZE_JOB_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/job/bit_budget.h"
#include "core/job/report.h"
#include "core/pack/format_registry.h"
#include "core/quant/quantizer.h"
#include "core/runtime/decoder_block.h"
#include "core/storage/object_store.h"
#include "core/util/job_context.h"
#include "core/util/thread_pool.h"

namespace lowbit {

// Different quantization parameters for the linear layers whose names match a glob pattern.
struct LayerOverride {
  std::string pattern;
  QuantConfig quant;
};

// Data for calibrated methods and for evaluation: texts tokenized with the model's tokenizer, or
// pre-tokenized ".ids.json" files that need none.
struct CalibrationSpec {
  std::string text_uri;       ///< calibration text; required by gptq, awq, vq and refined onebit; used by sensitive lut
  int samples = 32;           ///< windows
  int seqlen = 128;           ///< tokens per window
  uint32_t seed = 0;
};

struct EvaluationSpec {
  std::string text_uri;       ///< when set, the written model is evaluated against the source model
  int windows = 16;
  int seqlen = 128;
};

// Where an interrupted attempt of a job got to, in the destination's staging directory
// (core/job/output_transaction.h). A run given this point goes on from there; its output is
// byte-identical to a run from the start.
// - Data-free jobs into safetensors shards: the first output shards, written whole, holding the outputs
//   of the plan's first `tensors_done` tensors; the run keeps them and starts with the next shard.
// - Calibrated jobs (any output format): `block`, whose entering hidden states were saved, with the
//   packed outputs of every block before it (in the staging's scratch, kScratchDir); the run replays those
//   into a fresh output and calibrates from `block` on.
struct ResumePoint {
  std::vector<OutputFile> shards;   ///< data-free: committed shards in order, with their sizes
  int64_t tensors_done = 0;         ///< data-free: leading plan tensors whose every output is in those shards
  int block = 0;                    ///< calibrated: the block to go on from (0: none)
  std::vector<LayerReport> layers;  ///< the reports of the quantized layers the kept part holds
  int attempt = 0;                  ///< which attempt wrote them (for the report)
};

struct QuantizeJobSpec {
  std::string source_uri;        ///< checkpoint file or directory
  std::string destination_uri;   ///< output directory
  QuantConfig quant;
  OutputFormat format = OutputFormat::kAuto;
  bool quantize_lm_head = false;     ///< lm_head stays in high precision unless asked
  std::vector<std::string> include;  ///< glob patterns of linear layers to quantize (empty: all)
  std::vector<std::string> exclude;  ///< glob patterns of linear layers to keep in high precision
  std::vector<LayerOverride> overrides;  ///< the first matching pattern wins over `quant`
  bool overwrite = false;            ///< replace an existing output instead of ALREADY_EXISTS
  // Who holds the destination's lock (core/job/output_transaction.h) for the job's whole life, across
  // attempts: the server's job name. Empty: the run takes a lock of its own and releases it at its end.
  std::string lock_owner;
  ResumePoint resume;  ///< with lock_owner: where the previous attempt of this job got to
  std::string tokenizer_uri;         ///< for plain-text calibration and evaluation; default: the one beside the checkpoint
  uint64_t shard_bytes = 5'000'000'000;  ///< tensor data per output file (save_pretrained's default "5GB")
  std::string gguf_type = "Q8_0";    ///< kGguf: the ggml type of the linear layers (core/quant/ggml_types.h)
  bool write_imatrix = false;        ///< calibrated jobs: also write imatrix.gguf for llama-quantize --imatrix
  CalibrationSpec calibration;
  EvaluationSpec evaluation;
  // Active: the layers' settings are allocated under this budget from measurement (core/job/bit_budget.h),
  // `quant` and `overrides` chosen by the allocation; kAuto writes native.
  BitBudget budget;
};

// The format a job writes: its format, or for kAuto its method's natural one (native for a budget job).
OutputFormat JobFormat(const QuantizeJobSpec& spec);

// What a job tells the one who runs it: the job context (cancellation, progress by phase) and, from the
// job's own thread in tensor order, the start and each tensor written.
class JobObserver : public JobContext {
 public:
  // Once the checkpoint's header is read: quantized layers and bytes to come.
  virtual void OnStart(int64_t layers_total, uint64_t bytes_total) {}
  // After each tensor is written; `layer` is null for tensors kept in high precision.
  virtual void OnTensorDone(const std::string& name, const LayerReport* layer, uint64_t bytes_read,
                            uint64_t bytes_written) {}
  // Budget jobs: once the settings are allocated, before any layer is quantized.
  virtual void OnAllocation(const AllocationReport& allocation) {}
  // After each output shard is written whole: where a later attempt could resume (resumable jobs only).
  virtual void OnShardCommitted(const ResumePoint& point) {}
  // Just before the output is committed: an error stops the job uncommitted (a replica that may have
  // lost the job to another, server/fleet.h).
  virtual absl::Status BeforeCommit() { return absl::OkStatus(); }
};

struct JobOptions {
  ThreadPool* pool = nullptr;       ///< workers shared by all jobs; nullptr runs everything inline
  int max_tensors_in_flight = 4;    ///< bound on tensors held in memory (read, not yet written)
  uint64_t max_bytes_in_flight = 256ull << 20;  ///< bound on their checkpoint bytes (working memory is ~3x); one tensor may exceed it alone
  // Jobs whose resource plan (core/job/job_plan.h) exceeds this are refused with RESOURCE_EXHAUSTED
  // instead of risking the process and every other job in it. 0: no limit.
  uint64_t memory_limit_bytes = 0;
  int64_t rows_per_chunk = kDefaultRowsPerChunk;  ///< tokens per batched pass (core/runtime/decoder_block.h)
  // Calibrated jobs a caller may resume (spec.lock_owner): how often, at most, the hidden states are saved
  // at a block boundary (they are rows x hidden floats: GBs on large models). 0: at every block.
  absl::Duration hidden_state_interval = absl::Seconds(60);
};

// The job's report, written last into the output: its commit marker.
inline constexpr char kReportFile[] = "lowbit_report.json";
// A budget job's measurement, for later jobs on the same model (BitBudget::measurement_uri).
inline constexpr char kMeasurementFile[] = "measurement.json";

// Reads from `source`, writes to `destination` (may be the same store). INVALID_ARGUMENT for a bad
// config or bad weights (naming the tensor), NOT_FOUND for a missing source, ALREADY_EXISTS for an
// existing output without `overwrite`, FAILED_PRECONDITION for a destination another job holds,
// DATA_LOSS for corrupt checkpoints, CANCELLED if cancelled.
absl::StatusOr<JobReport> RunQuantizeJob(const QuantizeJobSpec& spec, ObjectStore* source, ObjectStore* destination,
                                         const JobOptions& options, JobObserver* observer = nullptr);

// A budget job's measurement (core/job/bit_budget.h) of `spec`'s layers on its calibration, or the one at
// spec.budget.measurement_uri (FAILED_PRECONDITION if that was measured on anything else); `lowbit plan`
// and budget jobs. BudgetCandidates: the job's candidates (given, or the format's defaults).
absl::StatusOr<Measurement> MeasurementFor(const QuantizeJobSpec& spec, const CheckpointReader& reader, ObjectStore* store,
                                           const JobOptions& options, JobContext* context);
std::vector<std::string> BudgetCandidates(const QuantizeJobSpec& spec);

// Checks a spec without touching any store (the server calls it before queueing).
absl::Status ValidateJobSpec(const QuantizeJobSpec& spec);
// INVALID_ARGUMENT if the destination is or holds the source's directory as the stores see them (which
// ValidateJobSpec cannot tell from the spelling: a symbolic link on a local store).
absl::Status CheckDestinationApart(const QuantizeJobSpec& spec, ObjectStore* source, ObjectStore* destination);

// Whether the job runs calibration: always for the methods that need it, with data for those that can use it.
bool Calibrates(const QuantizeJobSpec& spec);

}  // namespace lowbit

#endif  // LOWBIT_CORE_JOB_QUANTIZE_JOB_H_
