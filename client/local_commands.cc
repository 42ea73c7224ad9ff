#include "client/local_commands.h"

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <thread>

#include <google/protobuf/util/json_util.h>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/console.h"
#include "client/exit_code.h"
#include "client/flags.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/job/convert_job.h"
#include "core/pack/dequantized_reader.h"
#include "core/pack/gptq.h"
#include "core/runtime/evaluation.h"
#include "core/runtime/llama_model.h"
#include "core/runtime/token_windows.h"
#include "core/runtime/tokenizer.h"
#include "core/job/job_plan.h"
#include "core/job/output_transaction.h"
#include "core/job/quantize_job.h"
#include "core/storage/routing_object_store.h"
#include "core/util/status_macros.h"
#include "server/proto_convert.h"

ABSL_FLAG(std::string, run_id, "",
          "quantize: a name for this run that stays the same when it is retried (a Kubernetes Job's name): the "
          "destination stays locked for it and a retry resumes from what the interrupted run finished");
ABSL_FLAG(std::vector<std::string>, budgets, (std::vector<std::string>{"2.5", "3", "3.5", "4", "4.5", "5", "6", "8"}),
          "plan: bits per linear weight to allocate for");
ABSL_FLAG(std::string, plot, "", "plan: draw the predicted KL against bits per weight into this PNG (needs gnuplot)");
ABSL_FLAG(std::string, save_measurement, "", "plan: write the measurement here, for --measurement of later jobs");
ABSL_FLAG(bool, progress_json, false,
          "quantize: progress as JSON lines on stdout (start, layer, progress, end), for log collectors");

namespace lowbit::cli {
namespace {

// Local paths become absolute file:// URIs on a store rooted at "/".
std::string ToUri(const std::string& path) {
  if (absl::StrContains(path, "://")) return path;
  return absl::StrCat("file://", std::filesystem::absolute(path).lexically_normal().string());
}

// file:// (and plain paths) on the local filesystem, s3:// with the AWS configuration of the environment.
absl::StatusOr<std::unique_ptr<ObjectStore>> OpenStore() {
  StoreConfig config;
  config.s3_endpoint = absl::GetFlag(FLAGS_s3_endpoint);
  config.s3_region = absl::GetFlag(FLAGS_s3_region);
  ASSIGN_OR_RETURN(std::unique_ptr<RoutingObjectStore> store, CreateObjectStore(config));
  return std::unique_ptr<ObjectStore>(std::move(store));
}

absl::Status RequireInputOutput() {
  if (absl::GetFlag(FLAGS_input).empty()) return absl::InvalidArgumentError("--input is required");
  if (absl::GetFlag(FLAGS_output).empty()) return absl::InvalidArgumentError("--output is required");
  return absl::OkStatus();
}

// A run with --run-id keeps where it got to here, in the destination's staging, so that a retry on any
// machine finds it: a JobRecord as the server's job store holds one (attempts and resume point).
std::string RunStateUri(const std::string& destination) {
  return JoinUri(JoinUri(JoinUri(destination, kStagingDir), kScratchDir), "run-state.json");
}

internal::JobRecord LoadRunState(ObjectStore* store, const std::string& destination) {
  internal::JobRecord state;
  absl::StatusOr<std::string> json = store->ReadAll(RunStateUri(destination));
  if (json.ok() && !google::protobuf::util::JsonStringToMessage(*json, &state).ok()) state.Clear();  // start afresh
  return state;
}

absl::Status SaveRunState(ObjectStore* store, const std::string& destination, const internal::JobRecord& state) {
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(state, &json).ok()) return absl::InternalError("run state");
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> out, store->NewWriter(RunStateUri(destination)));
  RETURN_IF_ERROR(out->Append(json));
  return out->Commit();
}

// "12 x gptq-4b-g32, 3 x vq-3b-d2"
std::string SettingCounts(const std::map<std::string, int>& uses) {
  std::vector<std::string> counts;
  for (const auto& [setting, n] : uses) counts.push_back(absl::StrCat(n, " x ", setting));
  return absl::StrJoin(counts, ", ");
}

// "allocation: 4.5 bits per weight: 4.498 bits/weight, predicted KL 0.0512 (no allocation below 0.0509); 12 x gptq-4b-g32, ..."
std::string AllocationLine(const AllocationReport& a) {
  std::map<std::string, int> uses;
  for (const AllocatedLayer& l : a.layers) ++uses[l.setting];
  return absl::StrFormat("allocation (%s): %.3f bits/weight, predicted KL %.4f (no allocation below %.4f%s); %s\n", a.target,
                         a.bits_per_weight, a.predicted_kl, a.lower_bound_kl, a.exact ? ", exact" : "", SettingCounts(uses));
}

class ConsoleObserver final : public JobObserver {
 public:
  // `tables`: the layer table and a progress bar; `json_lines`: one JSON object per event instead.
  // With `run_state`, every resume point is saved to the destination's staging.
  ConsoleObserver(bool tables, bool json_lines, bool calibrating) : tables_(tables && !json_lines), json_lines_(json_lines), calibrating_(calibrating) {}
  void KeepRunState(ObjectStore* store, std::string destination, internal::JobRecord state) {
    store_ = store;
    destination_ = std::move(destination);
    state_ = std::move(state);
  }
  void OnStart(int64_t layers_total, uint64_t bytes_total) override {
    total_ = layers_total;
    if (tables_) std::cout << LayerTableHeader() << std::flush;
    Emit({{"event", "start"}, {"layers_total", layers_total}, {"bytes_total", bytes_total}, {"attempt", state_.attempts()}});
  }
  void OnTensorDone(const std::string& name, const LayerReport* layer, uint64_t bytes_read, uint64_t) override {
    if (layer == nullptr) return;
    ++done_;
    if (tables_) {
      bar_.Finish();
      std::cout << LayerTableRow(*layer) << std::flush;
    }
    if (!calibrating_ && tables_) bar_.Update(done_, total_, name);
    Emit({{"event", "layer"}, {"name", layer->name}, {"method", layer->method}, {"bits_per_weight", layer->bits_per_weight},
          {"relative_error", layer->relative_error}, {"seconds", layer->seconds}, {"layers_done", done_},
          {"layers_total", total_}, {"bytes_read", bytes_read}});
  }
  void OnAllocation(const AllocationReport& a) override {
    if (tables_) {
      bar_.Finish();
      std::cout << AllocationLine(a) << std::flush;
    }
    Emit({{"event", "allocation"}, {"allocation", ToJson(a)}});
  }
  // Measurement, calibration and evaluation go block by block (and layer by layer): the bar follows them.
  void Progress(const JobProgress& p) override {
    if (p.phase != JobPhase::kCalibrating && p.phase != JobPhase::kEvaluating && p.phase != JobPhase::kMeasuring) return;
    const char* phase = p.phase == JobPhase::kCalibrating ? "calibrating" : p.phase == JobPhase::kMeasuring ? "measuring" : "evaluating";
    if (tables_) bar_.Update(p.done, p.total, absl::StrCat(phase, " ", p.item));
    Emit({{"event", "progress"}, {"phase", phase}, {"done", p.done}, {"total", p.total}, {"item", p.item}});
  }
  void OnShardCommitted(const ResumePoint& point) override {
    if (store_ == nullptr) return;
    server::SetResumePoint(point, &state_);
    // Not fatal: a retry then resumes from an earlier point, or from the start.
    if (absl::Status s = SaveRunState(store_, destination_, state_); !s.ok()) {
      std::fprintf(stderr, "lowbit: cannot save the run's state: %s\n", s.ToString().c_str());
    }
  }
  void Emit(const nlohmann::json& event) {
    if (json_lines_) std::cout << event.dump() << "\n" << std::flush;
  }
  void Finish() { bar_.Finish(); }

 private:
  const bool tables_, json_lines_, calibrating_;
  ProgressBar bar_;
  int64_t done_ = 0, total_ = 0;
  ObjectStore* store_ = nullptr;
  std::string destination_;
  internal::JobRecord state_;
};

}  // namespace

absl::StatusOr<uint64_t> MemoryLimitFromFlags() {
  const std::string limit = absl::GetFlag(FLAGS_memory_limit);
  if (limit.empty()) return DefaultMemoryLimit();
  return ParseByteSize(limit);
}

absl::Status PrintPlan(const QuantizeJobSpec& spec, ObjectStore* store, const JobOptions& options) {
  RETURN_IF_ERROR(ValidateJobSpec(spec));
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, OpenCheckpoint(store, spec.source_uri));
  ASSIGN_OR_RETURN(const ResourceEstimate e, EstimateResources(reader->descriptor(), reader->tensors(), spec, options));
  const absl::Status fits = CheckMemoryLimit(e, options.memory_limit_bytes);
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j = e.ToJson();
    j["memory_limit_bytes"] = options.memory_limit_bytes;
    j["fits"] = fits.ok();
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << "plan: " << e.Summary() << "\n"
              << "memory limit: " << (options.memory_limit_bytes ? FormatBytes(options.memory_limit_bytes) : "none") << " ("
              << (fits.ok() ? "fits" : "does not fit") << ")\n";
  }
  return fits;
}

absl::Status RunQuantizeCommand() {
  RETURN_IF_ERROR(RequireInputOutput());
  // The request lowbitd would get, with local paths as URIs, read by lowbitd's own JobSpecFromRequest.
  ASSIGN_OR_RETURN(v1::QuantizeModelRequest request, RequestFromFlags());
  request.set_source_uri(ToUri(request.source_uri()));
  request.set_destination_uri(ToUri(request.destination_uri()));
  for (std::string* uri : {request.mutable_tokenizer_uri(), request.mutable_calibration()->mutable_text_uri(),
                           request.mutable_evaluation()->mutable_text_uri(), request.mutable_budget()->mutable_measurement_uri()}) {
    if (!uri->empty()) *uri = ToUri(*uri);
  }
  ASSIGN_OR_RETURN(QuantizeJobSpec spec, server::JobSpecFromRequest(request));
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenStore());
  const int threads = absl::GetFlag(FLAGS_threads) > 0 ? absl::GetFlag(FLAGS_threads)
                                                       : static_cast<int>(std::thread::hardware_concurrency());
  ThreadPool pool(threads);
  const bool json = absl::GetFlag(FLAGS_json);
  JobOptions options{&pool, 2 * threads};
  ASSIGN_OR_RETURN(options.memory_limit_bytes, MemoryLimitFromFlags());
  if (absl::GetFlag(FLAGS_dry_run)) return PrintPlan(spec, store.get(), options);
  const bool json_lines = absl::GetFlag(FLAGS_progress_json);
  ConsoleObserver observer(!json, json_lines, Calibrates(spec));
  const std::string run_id = absl::GetFlag(FLAGS_run_id);
  if (!run_id.empty()) {
    // The run holds the destination across its retries and resumes from the state the last one saved.
    spec.lock_owner = absl::StrCat("run/", run_id);
    internal::JobRecord state = LoadRunState(store.get(), spec.destination_uri);
    spec.resume = server::ResumePointOf(state);
    state.set_attempts(state.attempts() + 1);
    observer.KeepRunState(store.get(), spec.destination_uri, state);
  }
  absl::StatusOr<JobReport> report = RunQuantizeJob(spec, store.get(), store.get(), options, &observer);
  observer.Finish();
  if (!run_id.empty() && (report.ok() || !IsRetryable(report.status()))) {
    // Done for good, either way: nothing to resume; the destination is free again.
    ReleaseDestination(store.get(), spec.destination_uri, spec.lock_owner).IgnoreError();
  }
  if (json_lines) {
    nlohmann::json end = {{"event", "end"}, {"ok", report.ok()}, {"exit_code", ExitCode(report.status())}};
    if (!report.ok()) end["error"] = {{"code", absl::StatusCodeToString(report.status().code())},
                                      {"message", std::string(report.status().message())}};
    if (report.ok()) end["resumed"] = report->resumed;
    observer.Emit(end);
  }
  if (!report.ok()) return report.status();
  if (json_lines) return absl::OkStatus();
  if (json) {
    std::cout << ToJson(*report).dump(2) << "\n";
  } else {
    std::cout << SummaryLine(report->summary);
    if (report->evaluation) std::cout << EvaluationLine(*report->evaluation);
    std::cout << "wrote " << spec.destination_uri << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunConvertCommand() {
  RETURN_IF_ERROR(RequireInputOutput());
  const std::string source = ToUri(absl::GetFlag(FLAGS_input));
  const std::string destination = ToUri(absl::GetFlag(FLAGS_output));
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenStore());
  RETURN_IF_ERROR(RunConvertJob(store.get(), source, destination, absl::GetFlag(FLAGS_overwrite)));
  std::cout << "wrote " << destination << "\n";
  return absl::OkStatus();
}

// --tokenizer, else the tokenizer beside --model.
absl::StatusOr<std::string> TokenizerUriFor(ObjectStore* store, const std::string& model_uri, const std::string& text_uri) {
  const std::string given = absl::GetFlag(FLAGS_tokenizer).empty() ? "" : ToUri(absl::GetFlag(FLAGS_tokenizer));
  return TokenizerFor(store, given, model_uri, text_uri);
}

absl::Status RunGenerateCommand() {
  if (absl::GetFlag(FLAGS_model).empty()) return absl::InvalidArgumentError("--model is required");
  const std::string model_uri = ToUri(absl::GetFlag(FLAGS_model));
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenStore());
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, OpenCheckpoint(store.get(), model_uri));
  ASSIGN_OR_RETURN(LlamaModel model, LlamaModel::Load(*reader));
  ASSIGN_OR_RETURN(const std::string tokenizer_uri, TokenizerUriFor(store.get(), model_uri, ""));
  if (tokenizer_uri.empty()) return absl::InvalidArgumentError("--tokenizer is required (none is beside --model)");
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, LoadTokenizer(store.get(), tokenizer_uri, model.vocab_size()));
  const int bos = tokenizer->bos() >= 0 ? tokenizer->bos() : Llama2cTokenizer::kBos;
  std::cout << tokenizer->Decode(GreedyDecode(model, bos, absl::GetFlag(FLAGS_steps))) << "\n";
  return absl::OkStatus();
}

absl::Status RunTokenizeCommand() {
  if (absl::GetFlag(FLAGS_tokenizer).empty() || absl::GetFlag(FLAGS_text).empty()) {
    return absl::InvalidArgumentError("--tokenizer and --text are required");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenStore());
  // The vocabulary size only matters to llama2.c's tokenizer.bin, which does not record it.
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                   LoadTokenizer(store.get(), ToUri(absl::GetFlag(FLAGS_tokenizer)), absl::GetFlag(FLAGS_vocab_size)));
  ASSIGN_OR_RETURN(const std::string text, store->ReadAll(ToUri(absl::GetFlag(FLAGS_text))));
  auto print = [](const std::vector<int>& ids) {
    if (absl::GetFlag(FLAGS_json)) {
      std::cout << nlohmann::json(ids).dump() << "\n";
    } else {
      std::cout << absl::StrJoin(ids, " ") << "\n";
    }
  };
  if (!absl::GetFlag(FLAGS_jsonl)) {
    print(tokenizer->Encode(text));
    return absl::OkStatus();
  }
  // One JSON string per line in, one array of ids per line out.
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    const nlohmann::json s = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!s.is_string()) return absl::InvalidArgumentError(absl::StrCat("--jsonl: a line is not a JSON string: ", line.substr(0, 80)));
    print(tokenizer->Encode(s.get<std::string>()));
  }
  return absl::OkStatus();
}

absl::Status RunEvalCommand() {
  if (absl::GetFlag(FLAGS_model).empty() || absl::GetFlag(FLAGS_text).empty()) {
    return absl::InvalidArgumentError("--model and --text are required (and a tokenizer, beside the model or --tokenizer, unless the text is .ids.json)");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenStore());
  // Quantized outputs of lowbit are dequantized on the way in; plain checkpoints pass through.
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, OpenDequantized(store.get(), ToUri(absl::GetFlag(FLAGS_model))));
  std::unique_ptr<CheckpointReader> reference;
  if (!absl::GetFlag(FLAGS_reference).empty()) {
    ASSIGN_OR_RETURN(reference, OpenDequantized(store.get(), ToUri(absl::GetFlag(FLAGS_reference))));
  }
  std::unique_ptr<Tokenizer> tokenizer;
  // Beside the reference (the source model) first: a quantized output need not carry one.
  const std::string text_uri = ToUri(absl::GetFlag(FLAGS_text));
  ASSIGN_OR_RETURN(std::string tokenizer_uri, TokenizerUriFor(store.get(), ToUri(absl::GetFlag(FLAGS_model)), text_uri));
  if (tokenizer_uri.empty() && reference) {
    ASSIGN_OR_RETURN(tokenizer_uri, TokenizerUriFor(store.get(), ToUri(absl::GetFlag(FLAGS_reference)), text_uri));
  }
  ASSIGN_OR_RETURN(const TokenSource source, OpenTokenSource(store.get(), tokenizer_uri, reader->descriptor(), &tokenizer));
  ASSIGN_OR_RETURN(const EvaluationWindows windows,
                   MakeEvaluationWindows(store.get(), ToUri(absl::GetFlag(FLAGS_text)), source,
                                         absl::GetFlag(FLAGS_eval_windows), absl::GetFlag(FLAGS_eval_seqlen)));
  // --distributions: every predicted position's log-probabilities, for comparing with another engine.
  std::unique_ptr<ObjectWriter> distributions;
  if (!absl::GetFlag(FLAGS_distributions).empty()) {
    ASSIGN_OR_RETURN(distributions, store->NewWriter(ToUri(absl::GetFlag(FLAGS_distributions))));
  }
  const LogProbsSink write_row = [&distributions](const std::vector<double>& log_probs) {
    const std::vector<float> row(log_probs.begin(), log_probs.end());
    return distributions->Append(absl::string_view(reinterpret_cast<const char*>(row.data()), row.size() * sizeof(float)));
  };
  ASSIGN_OR_RETURN(EvalResult r, Evaluate(*reader, reference.get(), windows, nullptr, kDefaultRowsPerChunk,
                                          distributions ? write_row : LogProbsSink()));
  if (distributions) RETURN_IF_ERROR(distributions->Commit());
  if (absl::GetFlag(FLAGS_json)) {
    nlohmann::json j = {{"perplexity", r.perplexity}, {"tokens", r.tokens}};
    if (reference) j["reference_perplexity"] = r.reference_perplexity, j["kl_divergence"] = r.kl_divergence;
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << EvaluationLine({r.perplexity, r.reference_perplexity, r.kl_divergence, r.tokens, ""});
  }
  return absl::OkStatus();
}


namespace {

// Of the uniform plans (one per candidate), the index of the best at or under `bpw`: a budget's baseline.
std::optional<int> BestUniform(const std::vector<BudgetPlan>& uniform, double bpw) {
  std::optional<int> best;
  for (size_t c = 0; c < uniform.size(); ++c) {
    if (uniform[c].bits_per_weight() <= bpw && (!best || uniform[c].predicted_kl < uniform[*best].predicted_kl)) best = static_cast<int>(c);
  }
  return best;
}

// Draws the allocation curve, the uniform settings and the budgets with gnuplot into `png`.
absl::Status Plot(const std::string& png, const std::vector<std::pair<double, double>>& curve,
                  const std::vector<std::tuple<std::string, double, double>>& uniform, const std::vector<double>& budgets) {
  const std::string dir = std::filesystem::temp_directory_path() / absl::StrCat("lowbit-plot-", getpid());
  std::filesystem::create_directories(dir);
  std::string curve_data, uniform_data;
  for (const auto& [bpw, kl] : curve) absl::StrAppend(&curve_data, bpw, " ", kl, "\n");
  for (const auto& [name, bpw, kl] : uniform) absl::StrAppend(&uniform_data, bpw, " ", kl, " ", name, "\n");
  std::string script = absl::StrCat(
      "set terminal png size 1000,650\nset output '", png, "'\nset logscale y\nset grid\n",
      "set xlabel 'bits per linear weight'\nset ylabel 'predicted KL to the source (nats/token)'\n",
      "set title 'lowbit plan: the most accurate allocation at each budget'\n");
  for (const double b : budgets) absl::StrAppend(&script, "set arrow from ", b, ", graph 0 to ", b, ", graph 1 nohead dt 3 lc rgb 'gray'\n");
  absl::StrAppend(&script, "plot '", dir, "/curve' with linespoints lw 2 title 'allocated', '", dir,
                  "/uniform' using 1:2 with points pt 7 title 'one setting everywhere'\n");
  for (const auto& [name, text] : {std::pair<std::string, std::string>{"curve", curve_data}, {"uniform", uniform_data}, {"plot.gp", script}}) {
    FILE* f = std::fopen((dir + "/" + name).c_str(), "w");
    if (f == nullptr) return absl::InternalError(absl::StrCat("--plot: cannot write ", dir, "/", name));
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  const int rc = std::system(absl::StrCat("gnuplot '", dir, "/plot.gp' 2>", dir, "/err").c_str());
  std::filesystem::remove_all(dir);
  if (rc != 0) {
    return absl::FailedPreconditionError("--plot: gnuplot failed or is not installed (Debian: apt install gnuplot-nox)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunPlanCommand() {
  if (absl::GetFlag(FLAGS_input).empty()) return absl::InvalidArgumentError("--input is required");
  if (absl::GetFlag(FLAGS_calib).empty() && absl::GetFlag(FLAGS_measurement).empty()) {
    return absl::InvalidArgumentError("--calib is required: the candidates are measured on a calibration text");
  }
  QuantizeJobSpec spec;
  spec.source_uri = ToUri(absl::GetFlag(FLAGS_input));
  if (!absl::GetFlag(FLAGS_tokenizer).empty()) spec.tokenizer_uri = ToUri(absl::GetFlag(FLAGS_tokenizer));
  spec.calibration = {absl::GetFlag(FLAGS_calib).empty() ? "" : ToUri(absl::GetFlag(FLAGS_calib)), absl::GetFlag(FLAGS_calib_samples),
                      absl::GetFlag(FLAGS_calib_seqlen), static_cast<uint32_t>(absl::GetFlag(FLAGS_calib_seed))};
  const std::optional<OutputFormat> format = ParseFormat(absl::GetFlag(FLAGS_format));
  if (!format) return absl::InvalidArgumentError(absl::StrCat("--format: unknown format '", absl::GetFlag(FLAGS_format), "'"));
  spec.format = *format == OutputFormat::kAuto ? OutputFormat::kNative : *format;
  spec.include = absl::GetFlag(FLAGS_include);
  spec.exclude = absl::GetFlag(FLAGS_exclude);
  spec.budget.candidates = absl::GetFlag(FLAGS_candidates);
  if (!absl::GetFlag(FLAGS_measurement).empty()) spec.budget.measurement_uri = ToUri(absl::GetFlag(FLAGS_measurement));
  spec.budget.sensitivity_windows = absl::GetFlag(FLAGS_sensitivity_windows);
  RETURN_IF_ERROR(ValidateCandidates(spec.budget.candidates, spec.format));
  std::vector<double> budgets;
  for (const std::string& b : absl::GetFlag(FLAGS_budgets)) {
    double v = 0;
    if (!absl::SimpleAtod(b, &v) || !(v > 0)) return absl::InvalidArgumentError(absl::StrCat("--budgets: '", b, "' is not a positive number"));
    budgets.push_back(v);
  }

  ASSIGN_OR_RETURN(std::unique_ptr<ObjectStore> store, OpenStore());
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> reader, OpenCheckpoint(store.get(), spec.source_uri));
  const int threads = absl::GetFlag(FLAGS_threads) > 0 ? absl::GetFlag(FLAGS_threads)
                                                       : static_cast<int>(std::thread::hardware_concurrency());
  ThreadPool pool(threads);
  JobOptions options{&pool, 2 * threads};
  const bool json = absl::GetFlag(FLAGS_json);
  ConsoleObserver observer(!json, false, true);
  absl::StatusOr<Measurement> measured = MeasurementFor(spec, *reader, store.get(), options, &observer);
  observer.Finish();
  if (!measured.ok()) return measured.status();
  const Measurement& m = *measured;
  if (const std::string out = absl::GetFlag(FLAGS_save_measurement); !out.empty()) {
    RETURN_IF_ERROR(store->WriteAll(ToUri(out), m.ToJson().dump(1)));
  }

  std::vector<BudgetPlan> uniform;  // every layer on one candidate
  for (size_t c = 0; c < m.candidates.size(); ++c) uniform.push_back(UniformPlan(m, static_cast<int>(c)));
  nlohmann::json rows = nlohmann::json::array();
  if (!json) {
    std::cout << absl::StrFormat("%d layers, %d candidates, measured in %.1f s\n\n", m.layers.size(), m.candidates.size(), m.seconds)
              << "| budget (bits/weight) | allocated bits/weight | predicted KL | no allocation below | best uniform setting | its bits/weight | its predicted KL | settings used |\n"
              << "|---|---|---|---|---|---|---|---|\n";
  }
  for (const double b : budgets) {
    BitBudget budget;
    budget.bits_per_weight = b;
    absl::StatusOr<BudgetPlan> p = PlanBudget(m, budget);
    const std::optional<int> best = BestUniform(uniform, b);
    nlohmann::json row = {{"budget", b}};
    std::map<std::string, int> uses;
    if (p.ok()) {
      nlohmann::json choice = nlohmann::json::object();
      for (size_t i = 0; i < p->choice.size(); ++i) {
        ++uses[m.candidates[p->choice[i]]];
        choice[m.layers[i].name] = m.candidates[p->choice[i]];
      }
      row.update({{"bits_per_weight", p->bits_per_weight()}, {"predicted_kl", p->predicted_kl}, {"lower_bound_kl", p->lower_bound_kl},
                  {"exact", p->exact}, {"settings", uses}, {"choice", choice}});
    } else {
      row["error"] = std::string(p.status().message());
    }
    if (best) {
      row["best_uniform"] = {{"setting", m.candidates[*best]}, {"bits_per_weight", uniform[*best].bits_per_weight()},
                             {"predicted_kl", uniform[*best].predicted_kl}};
    }
    rows.push_back(row);
    if (json) continue;
    std::cout << absl::StrFormat("| %g | %s | %s | %s | %s | %s | %s | %s |\n", b,
                                 p.ok() ? absl::StrFormat("%.3f", p->bits_per_weight()) : "-",
                                 p.ok() ? absl::StrFormat("%.4f", p->predicted_kl) : "below the smallest",
                                 p.ok() ? absl::StrFormat("%.4f", p->lower_bound_kl) : "-",
                                 best ? m.candidates[*best] : "none fits",
                                 best ? absl::StrFormat("%.3f", uniform[*best].bits_per_weight()) : "-",
                                 best ? absl::StrFormat("%.4f", uniform[*best].predicted_kl) : "-", SettingCounts(uses));
  }
  if (json) {
    nlohmann::json uniform_json = nlohmann::json::array();
    for (size_t c = 0; c < m.candidates.size(); ++c) {
      uniform_json.push_back({{"setting", m.candidates[c]}, {"bits_per_weight", uniform[c].bits_per_weight()},
                              {"predicted_kl", uniform[c].predicted_kl}});
    }
    std::cout << nlohmann::json{{"layers", m.layers.size()}, {"candidates", m.candidates}, {"measurement_seconds", m.seconds},
                                {"budgets", rows}, {"uniform", uniform_json}}.dump(2) << "\n";
  }
  if (const std::string png = absl::GetFlag(FLAGS_plot); !png.empty()) {
    // The curve from the smallest to the largest uniform plan.
    double lo = 1e9, hi = 0;
    for (const BudgetPlan& u : uniform) lo = std::min(lo, u.bits_per_weight()), hi = std::max(hi, u.bits_per_weight());
    std::vector<std::pair<double, double>> curve;
    for (int i = 0; i <= 40; ++i) {
      BitBudget budget;
      budget.bits_per_weight = lo + (hi - lo) * i / 40.0;
      if (absl::StatusOr<BudgetPlan> p = PlanBudget(m, budget); p.ok()) curve.emplace_back(p->bits_per_weight(), std::max(p->predicted_kl, 1e-6));
    }
    std::vector<std::tuple<std::string, double, double>> points;
    for (size_t c = 0; c < m.candidates.size(); ++c) {
      points.emplace_back(m.candidates[c], uniform[c].bits_per_weight(), std::max(uniform[c].predicted_kl, 1e-6));
    }
    RETURN_IF_ERROR(Plot(std::filesystem::absolute(png).string(), curve, points, budgets));  // a local file
    if (!json) std::cout << "plotted " << png << "\n";
  }
  return absl::OkStatus();
}

}  // namespace lowbit::cli
