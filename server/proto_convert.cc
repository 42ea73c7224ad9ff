#include "server/proto_convert.h"

#include <google/protobuf/util/time_util.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace lowbit::server {
namespace {

// RTN parameters with the API's zero defaults filled in; violations are reported under `field`.
QuantConfig RtnConfig(const v1::RtnParams& p, const std::string& field, std::vector<FieldViolation>* violations) {
  QuantConfig c;
  c.bits = p.bits() == 0 ? 4 : p.bits();
  c.group_size = p.group_size() == 0 ? 128 : p.group_size();
  c.symmetric = p.symmetric();
  c.mse_clip = p.mse_clip();
  absl::Status s = ValidateQuantConfig(c);
  if (!s.ok()) violations->push_back({field, std::string(s.message())});
  return c;
}

// The method's config from its request params, with the API's zero defaults filled in; unset for no method.
std::optional<QuantConfig> MethodConfig(const v1::QuantizeModelRequest& request) {
  QuantConfig c;
  switch (request.method_case()) {
    case v1::QuantizeModelRequest::kRtn: return std::nullopt;  // RtnConfig, shared with overrides
    case v1::QuantizeModelRequest::kInt8:
      c.method = Method::kInt8, c.bits = 8, c.group_size = -1, c.symmetric = request.int8().symmetric();
      return c;
    case v1::QuantizeModelRequest::kGptq: {
      const v1::GptqParams& g = request.gptq();
      c.method = Method::kGptq, c.bits = g.bits() == 0 ? 4 : g.bits(), c.group_size = g.group_size() == 0 ? 128 : g.group_size();
      c.symmetric = !g.has_symmetric() || g.symmetric(), c.damp_percent = g.damp_percent() == 0 ? 0.01 : g.damp_percent();
      c.act_order = g.act_order(), c.static_groups = g.static_groups();
      return c;
    }
    case v1::QuantizeModelRequest::kAwq: {
      const v1::AwqParams& a = request.awq();
      c.method = Method::kAwq, c.bits = a.bits() == 0 ? 4 : a.bits(), c.group_size = a.group_size() == 0 ? 128 : a.group_size();
      c.symmetric = a.symmetric(), c.awq_grid = a.grid() == 0 ? 20 : a.grid(), c.awq_clip = !a.has_clip() || a.clip();
      return c;
    }
    case v1::QuantizeModelRequest::kLut: {
      const v1::LutParams& l = request.lut();
      c.method = Method::kLut;
      LutOptions& o = c.lut;
      o.bits = l.bits() == 0 ? 4 : l.bits();
      o.mode = l.mode() == v1::LutParams::UNIFORM ? LutMode::kUniform
               : l.mode() == v1::LutParams::UNIQUE ? LutMode::kUnique : LutMode::kKMeans;
      o.granularity = l.granularity() == v1::LutParams::PER_GROUPED_CHANNEL ? LutGranularity::kPerGroupedChannel
                                                                            : LutGranularity::kPerTensor;
      o.group_size = l.group_size() == 0 ? 32 : l.group_size();
      o.cluster_dim = l.cluster_dim() == 0 ? 1 : l.cluster_dim();
      o.per_channel_scale = l.per_channel_scale();
      o.sensitive = !l.has_sensitive() || l.sensitive();
      o.seed = l.seed();
      o.max_iterations = l.max_iterations() == 0 ? 50 : l.max_iterations();
      return c;
    }
    case v1::QuantizeModelRequest::kVq: {
      const v1::VqParams& v = request.vq();
      c.method = Method::kVq;
      VqOptions& o = c.vq;
      o.dim = v.dim() == 0 ? 2 : v.dim();
      o.bits = v.bits() == 0 ? 3 : v.bits();
      o.group_cols = v.group_cols() == 0 ? 256 : v.group_cols();
      o.group_rows = v.group_rows() == 0 ? 256 : v.group_rows();
      o.em_iterations = v.em_iterations() == 0 ? 25 : v.em_iterations();
      o.update_iterations = v.has_update_iterations() ? v.update_iterations() : 10;
      o.damp_percent = v.damp_percent() == 0 ? 0.01 : v.damp_percent();
      o.seed = v.seed();
      return c;
    }
    case v1::QuantizeModelRequest::kOnebit: {
      const v1::OneBitParams& b = request.onebit();
      c.method = Method::kOneBit;
      c.onebit.decomposition = b.decomposition() == v1::OneBitParams::SVD ? OneBitDecomposition::kSvd : OneBitDecomposition::kNmf;
      c.onebit.max_iterations = b.max_iterations() == 0 ? 100 : b.max_iterations();
      c.onebit.refine_iterations = b.refine_iterations();
      return c;
    }
    case v1::QuantizeModelRequest::METHOD_NOT_SET: return std::nullopt;
  }
  return std::nullopt;
}

constexpr std::pair<v1::OutputFormat, OutputFormat> kFormats[] = {
    {v1::OUTPUT_FORMAT_UNSPECIFIED, OutputFormat::kAuto}, {v1::OUTPUT_FORMAT_GPTQ, OutputFormat::kGptq},
    {v1::OUTPUT_FORMAT_AWQ, OutputFormat::kAwq},          {v1::OUTPUT_FORMAT_NATIVE, OutputFormat::kNative},
    {v1::OUTPUT_FORMAT_GGUF, OutputFormat::kGguf}};

std::optional<OutputFormat> FormatOf(v1::OutputFormat format) {
  for (const auto& [api, core] : kFormats) {
    if (api == format) return core;
  }
  return std::nullopt;
}

// The request field that holds the method's parameters ("rtn", "gptq", ...).
std::string MethodField(const v1::QuantizeModelRequest& request) {
  switch (request.method_case()) {
    case v1::QuantizeModelRequest::kInt8: return "int8";
    case v1::QuantizeModelRequest::kGptq: return "gptq";
    case v1::QuantizeModelRequest::kAwq: return "awq";
    case v1::QuantizeModelRequest::kLut: return "lut";
    case v1::QuantizeModelRequest::kVq: return "vq";
    case v1::QuantizeModelRequest::kOnebit: return "onebit";
    default: return "rtn";
  }
}

// What a client may send: generous for any real job, small enough that job records, listings and logs
// stay bounded whatever a client sends. Label limits follow Google Cloud's (64 labels, keys of 63 bytes).
constexpr size_t kMaxUriBytes = 4096;  // PATH_MAX; an S3 key is at most 1024 bytes
constexpr size_t kMaxRequestIdBytes = 128;
constexpr int kMaxLabels = 64;
constexpr size_t kMaxLabelKeyBytes = 63, kMaxLabelValueBytes = 256;
constexpr int kMaxPatterns = 256;
constexpr size_t kMaxPatternBytes = 256;

void CheckLimits(const v1::QuantizeModelRequest& request, std::vector<FieldViolation>* violations) {
  auto at_most = [&](const std::string& field, size_t size, size_t limit, absl::string_view unit) {
    if (size > limit) violations->push_back({field, absl::StrCat("at most ", limit, " ", unit, " (got ", size, ")")});
  };
  at_most("source_uri", request.source_uri().size(), kMaxUriBytes, "bytes");
  at_most("destination_uri", request.destination_uri().size(), kMaxUriBytes, "bytes");
  at_most("tokenizer_uri", request.tokenizer_uri().size(), kMaxUriBytes, "bytes");
  at_most("calibration.text_uri", request.calibration().text_uri().size(), kMaxUriBytes, "bytes");
  at_most("evaluation.text_uri", request.evaluation().text_uri().size(), kMaxUriBytes, "bytes");
  at_most("request_id", request.request_id().size(), kMaxRequestIdBytes, "bytes");
  at_most("gguf_type", request.gguf_type().size(), 32, "bytes");
  at_most("labels", request.labels_size(), kMaxLabels, "labels");
  for (const auto& [key, value] : request.labels()) {
    at_most(absl::StrCat("labels[", key.substr(0, 64), "]"), key.size(), kMaxLabelKeyBytes, "bytes of key");
    at_most(absl::StrCat("labels[", key.substr(0, 64), "]"), value.size(), kMaxLabelValueBytes, "bytes of value");
  }
  const v1::LayerSelection& layers = request.layers();
  for (const auto& [name, patterns] : {std::pair{"layers.include", &layers.include()}, {"layers.exclude", &layers.exclude()}}) {
    at_most(name, patterns->size(), kMaxPatterns, "patterns");
    for (int i = 0; i < patterns->size(); ++i) {
      at_most(absl::StrCat(name, "[", i, "]"), patterns->Get(i).size(), kMaxPatternBytes, "bytes");
    }
  }
  at_most("layers.overrides", layers.overrides_size(), kMaxPatterns, "overrides");
  for (int i = 0; i < layers.overrides_size(); ++i) {
    at_most(absl::StrCat("layers.overrides[", i, "].pattern"), layers.overrides(i).pattern().size(), kMaxPatternBytes, "bytes");
  }
  at_most("budget.candidates", request.budget().candidates_size(), kMaxPatterns, "candidates");
  for (int i = 0; i < request.budget().candidates_size(); ++i) {
    at_most(absl::StrCat("budget.candidates[", i, "]"), request.budget().candidates(i).size(), 64, "bytes");
  }
  at_most("budget.measurement_uri", request.budget().measurement_uri().size(), kMaxUriBytes, "bytes");
}

}  // namespace

absl::StatusOr<QuantizeJobSpec> JobSpecFromRequest(const v1::QuantizeModelRequest& request) {
  std::vector<FieldViolation> violations;
  CheckLimits(request, &violations);
  if (!violations.empty()) return InvalidRequest(violations);  // nothing oversized goes further, not even in messages
  QuantizeJobSpec spec;
  spec.source_uri = request.source_uri();
  spec.destination_uri = request.destination_uri();
  if (spec.source_uri.empty()) violations.push_back({"source_uri", "must not be empty"});
  if (spec.destination_uri.empty()) violations.push_back({"destination_uri", "must not be empty"});
  if (!spec.source_uri.empty() && spec.source_uri == spec.destination_uri) {
    violations.push_back({"destination_uri", "must differ from source_uri"});
  }
  const v1::BitBudget& b = request.budget();
  spec.budget.bits_per_weight = b.bits_per_weight();
  spec.budget.max_bytes = static_cast<uint64_t>(std::max<int64_t>(0, b.max_bytes()));
  spec.budget.max_kl = b.max_kl();
  spec.budget.candidates.assign(b.candidates().begin(), b.candidates().end());
  spec.budget.measurement_uri = b.measurement_uri();
  if (b.sensitivity_windows() != 0) spec.budget.sensitivity_windows = b.sensitivity_windows();
  if (b.target_case() != v1::BitBudget::TARGET_NOT_SET && b.bits_per_weight() <= 0 && b.max_bytes() <= 0 && b.max_kl() <= 0) {
    violations.push_back({"budget", "the target must be positive"});
  }
  if (spec.budget.active() && request.method_case() == v1::QuantizeModelRequest::METHOD_NOT_SET) {
    // The allocation chooses each layer's method.
  } else if (request.method_case() == v1::QuantizeModelRequest::METHOD_NOT_SET) {
    violations.push_back({"method", "set one of rtn, int8, gptq, awq, lut, vq, onebit (or a budget)"});
  } else if (request.method_case() == v1::QuantizeModelRequest::kRtn) {
    spec.quant = RtnConfig(request.rtn(), "rtn", &violations);
  } else {
    spec.quant = *MethodConfig(request);
    if (absl::Status s = ValidateQuantConfig(spec.quant); !s.ok()) {
      violations.push_back({MethodField(request), std::string(s.message())});
    }
  }
  if (const std::optional<OutputFormat> format = FormatOf(request.output_format())) {
    spec.format = *format;
  } else {
    violations.push_back({"output_format", absl::StrCat("unsupported format ", request.output_format())});
  }
  const v1::LayerSelection& layers = request.layers();
  spec.include.assign(layers.include().begin(), layers.include().end());
  spec.exclude.assign(layers.exclude().begin(), layers.exclude().end());
  spec.quantize_lm_head = layers.quantize_lm_head();
  for (int i = 0; i < layers.overrides_size(); ++i) {
    const v1::LayerOverride& o = layers.overrides(i);
    const std::string field = absl::StrCat("layers.overrides[", i, "]");
    if (o.pattern().empty()) violations.push_back({field + ".pattern", "must not be empty"});
    if (request.method_case() != v1::QuantizeModelRequest::kRtn) {
      violations.push_back({field, "overrides apply to rtn jobs"});
      continue;
    }
    spec.overrides.push_back({o.pattern(), RtnConfig(o.rtn(), field + ".rtn", &violations)});
  }
  spec.overwrite = request.overwrite();
  spec.tokenizer_uri = request.tokenizer_uri();
  if (!request.gguf_type().empty()) spec.gguf_type = request.gguf_type();
  spec.write_imatrix = request.write_imatrix();
  if (request.shard_size_bytes() < 0) violations.push_back({"shard_size_bytes", "must not be negative"});
  if (request.shard_size_bytes() > 0) spec.shard_bytes = static_cast<uint64_t>(request.shard_size_bytes());
  const v1::CalibrationData& c = request.calibration();
  spec.calibration = {c.text_uri(), c.samples() == 0 ? 32 : c.samples(), c.seqlen() == 0 ? 128 : c.seqlen(), c.seed()};
  const v1::EvaluationRequest& e = request.evaluation();
  spec.evaluation = {e.text_uri(), e.windows() == 0 ? 16 : e.windows(), e.seqlen() == 0 ? 128 : e.seqlen()};
  if (violations.empty()) {
    absl::Status s = ValidateJobSpec(spec);
    if (!s.ok()) {
      const absl::string_view message = s.message();
      // Core messages start with the field they are about ("destination_uri: ..."); a method option's
      // ("bits: ...") belongs to the method's parameters.
      const size_t colon = message.find(": ");
      std::string field = colon == absl::string_view::npos ? "" : std::string(message.substr(0, colon));
      if (field == "overrides") field = "layers.overrides";
      if (field == "quantize_lm_head") field = "layers.quantize_lm_head";
      const bool request_field = field == "layers.overrides" || field == "layers.quantize_lm_head" ||
                                 (!field.empty() && request.GetDescriptor()->FindFieldByName(field) != nullptr);
      if (!request_field) field = MethodField(request);
      // Core messages start with the field they are about; the violation names it already.
      violations.push_back({field, std::string(absl::StripPrefix(message, field + ": "))});
    }
  }
  if (!violations.empty()) return InvalidRequest(violations);
  return spec;
}

v1::OutputFormat ToProto(OutputFormat format) {
  for (const auto& [api, core] : kFormats) {
    if (core == format) return api;
  }
  return v1::OUTPUT_FORMAT_UNSPECIFIED;
}

google::protobuf::Timestamp NowTimestamp() {
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(absl::ToUnixNanos(absl::Now()));
}

v1::LayerReport ToProto(const LayerReport& layer) {
  v1::LayerReport p;
  p.set_name(layer.name);
  p.set_method(layer.method);
  for (int64_t d : layer.shape) p.add_shape(d);
  p.set_bits_per_weight(layer.bits_per_weight);
  p.set_relative_error(layer.relative_error);
  p.set_seconds(layer.seconds);
  p.set_note(layer.note);
  return p;
}

v1::Allocation ToProto(const AllocationReport& a) {
  v1::Allocation p;
  p.set_target(a.target);
  p.set_budget_bits_per_weight(a.budget_bits_per_weight);
  p.set_bits_per_weight(a.bits_per_weight);
  p.set_predicted_kl(a.predicted_kl);
  p.set_lower_bound_kl(a.lower_bound_kl);
  p.set_exact(a.exact);
  p.set_measurement(a.measurement);
  p.set_measurement_seconds(a.measurement_seconds);
  for (const AllocatedLayer& l : a.layers) {
    v1::AllocatedLayer* q = p.add_layers();
    q->set_name(l.name), q->set_setting(l.setting), q->set_bits_per_weight(l.bits_per_weight);
    q->set_output_error(l.output_error), q->set_sensitivity(l.sensitivity), q->set_predicted_kl(l.predicted_kl);
  }
  return p;
}

LayerReport FromProto(const v1::LayerReport& p) {
  return LayerReport{p.name(), p.method(), {p.shape().begin(), p.shape().end()}, p.bits_per_weight(),
                     p.relative_error(), p.seconds(), p.note()};
}

v1::Job::Phase ToProto(JobPhase phase) {
  switch (phase) {
    case JobPhase::kPlanning: return v1::Job::PLANNING;
    case JobPhase::kCalibrating: return v1::Job::CALIBRATING;
    case JobPhase::kQuantizing: return v1::Job::QUANTIZING;
    case JobPhase::kWriting: return v1::Job::WRITING;
    case JobPhase::kEvaluating: return v1::Job::EVALUATING;
    case JobPhase::kMeasuring: return v1::Job::MEASURING;
  }
  return v1::Job::PHASE_UNSPECIFIED;
}

v1::ResourcePlan ToProto(const ResourceEstimate& e, uint64_t memory_limit_bytes) {
  v1::ResourcePlan p;
  p.set_total_bytes(static_cast<int64_t>(e.total));
  p.set_memory_limit_bytes(static_cast<int64_t>(memory_limit_bytes));
  p.set_streaming_bytes(static_cast<int64_t>(e.streaming));
  p.set_block_weights_bytes(static_cast<int64_t>(e.block_weights));
  p.set_activations_bytes(static_cast<int64_t>(e.activations));
  p.set_statistics_bytes(static_cast<int64_t>(e.statistics));
  p.set_evaluation_bytes(static_cast<int64_t>(e.evaluation));
  p.set_activation_storage(e.activation_storage);
  p.set_calibration_rows(e.calibration_rows);
  p.set_summary(e.Summary());
  return p;
}

v1::QuantizeResult ToProto(const JobReport& report) {
  v1::QuantizeResult r;
  r.set_output_uri(report.destination);
  for (const OutputFile& f : report.files) {
    auto* file = r.add_files();
    file->set_name(f.name);
    file->set_bytes(static_cast<int64_t>(f.bytes));
  }
  const JobSummary& s = report.summary;
  r.set_layers_quantized(s.layers_quantized);
  r.set_weights_quantized(s.weights_quantized);
  r.set_bits_per_weight(s.bits_per_weight);
  r.set_mean_relative_error(s.mean_relative_error);
  r.set_max_relative_error(s.max_relative_error);
  r.set_bytes_read(static_cast<int64_t>(s.bytes_read));
  r.set_bytes_written(static_cast<int64_t>(s.bytes_written));
  r.set_seconds(s.seconds);
  r.set_resumed(report.resumed);
  if (report.evaluation) {
    v1::EvaluationResult* e = r.mutable_evaluation();
    e->set_perplexity(report.evaluation->perplexity);
    e->set_reference_perplexity(report.evaluation->reference_perplexity);
    e->set_kl_divergence(report.evaluation->kl_divergence);
    e->set_tokens(report.evaluation->tokens);
  }
  return r;
}

void SetResumePoint(const ResumePoint& point, internal::JobRecord* record) {
  record->clear_committed_shards();
  for (const OutputFile& f : point.shards) {
    v1::OutputFile* file = record->add_committed_shards();
    file->set_name(f.name);
    file->set_bytes(static_cast<int64_t>(f.bytes));
  }
  record->set_tensors_done(point.tensors_done);
  record->clear_committed_layers();
  for (const LayerReport& layer : point.layers) *record->add_committed_layers() = ToProto(layer);
  record->set_resume_block(point.block);
  record->set_committed_by_attempt(record->attempts());
}

ResumePoint ResumePointOf(const internal::JobRecord& record) {
  ResumePoint point;
  for (const v1::OutputFile& f : record.committed_shards()) point.shards.push_back({f.name(), static_cast<uint64_t>(f.bytes())});
  point.tensors_done = record.tensors_done();
  for (const v1::LayerReport& l : record.committed_layers()) point.layers.push_back(FromProto(l));
  point.block = record.resume_block();
  point.attempt = record.committed_by_attempt();
  return point;
}

}  // namespace lowbit::server
