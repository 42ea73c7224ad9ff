// The report of a quantization job: one entry per quantized layer and a summary. Written as
// lowbit_report.json (the commit marker of an output) and carried in job metadata by the server.
#ifndef LOWBIT_CORE_JOB_REPORT_H_
#define LOWBIT_CORE_JOB_REPORT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lowbit {

struct LayerReport {
  std::string name;             ///< the weight's name, e.g. "model.layers.0.mlp.down_proj.weight"
  std::string method;           ///< "rtn", "int8", ...
  std::vector<int64_t> shape;   ///< [out, in]
  double bits_per_weight = 0;   ///< every stored bit of the layer's tensors (codes, scales, zeros, g_idx, codebooks) per weight
  double relative_error = 0;    ///< ||W − Ŵ||_F / ||W||_F
  double seconds = 0;           ///< quantize + pack wall time
  std::string note;             ///< e.g. GPTQ's raised damping; empty when there is nothing to say
};

// A linear layer kept in high precision, and why (excluded by the request, or a shape the output format's
// engines cannot load).
struct KeptLayer {
  std::string name;
  std::string reason;
};

struct Evaluation {
  double perplexity = 0;            ///< of the quantized model
  double reference_perplexity = 0;  ///< of the source model, same windows
  double kl_divergence = 0;         ///< mean KL(source || quantized) per token, nats
  int64_t tokens = 0;
  std::string text;                 ///< the evaluation text's URI
};

struct OutputFile {
  std::string name;  ///< relative to the output directory
  uint64_t bytes = 0;
};

// A budget job's allocation: the target, each layer's setting, and the predicted KL (the measured one is
// the evaluation's).
struct AllocatedLayer {
  std::string name;
  std::string setting;           ///< the candidate, e.g. "gptq-4b-g32"
  double bits_per_weight = 0;    ///< as stored
  double output_error = 0;       ///< mean ‖ΔW x‖² per calibration token
  double sensitivity = 0;        ///< predicted KL per unit of output error
  double predicted_kl = 0;       ///< its share of the model's predicted KL
};

struct AllocationReport {
  std::string target;              ///< "4.5 bits per weight", "max 1.2 GB", "KL at most 0.05"
  double budget_bits_per_weight = 0;  ///< what the target allows over the allocated layers
  double bits_per_weight = 0;      ///< what the allocation takes
  double predicted_kl = 0;
  double lower_bound_kl = 0;       ///< no allocation within the budget is predicted below this
  bool exact = false;              ///< the allocator's optimum for the predicted KL
  std::string measurement;         ///< "measured" or the reused measurement's URI
  double measurement_seconds = 0;
  std::vector<AllocatedLayer> layers;
};

struct JobSummary {
  int64_t layers_quantized = 0;
  int64_t tensors_total = 0;
  int64_t weights_quantized = 0;      ///< parameters in quantized layers
  double bits_per_weight = 0;         ///< over quantized layers, weighted by parameters
  double mean_relative_error = 0;     ///< unweighted mean over layers
  double max_relative_error = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  double seconds = 0;                 ///< whole job wall time
};

struct JobReport {
  std::string source;
  std::string destination;
  nlohmann::json config;  ///< the method and format, as requested
  std::vector<LayerReport> layers;
  std::vector<KeptLayer> kept;  ///< linear layers of the decoder blocks left in high precision
  std::vector<OutputFile> files;
  JobSummary summary;
  std::optional<Evaluation> evaluation;
  std::optional<AllocationReport> allocation;  ///< budget jobs
  std::string resumed;  ///< how a resumed run continued an interrupted attempt ("" for a run from the start)
};

// Fills `report->summary` from its layers (all but bytes and seconds).
void Summarize(JobReport* report);
nlohmann::json ToJson(const LayerReport& layer);
nlohmann::json ToJson(const JobReport& report);
nlohmann::json ToJson(const AllocationReport& allocation);

}  // namespace lowbit

#endif  // LOWBIT_CORE_JOB_REPORT_H_
