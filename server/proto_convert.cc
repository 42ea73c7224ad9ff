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
  QuantConfig c{Method::kRtn, p.bits() == 0 ? 4 : p.bits(), p.group_size() == 0 ? 128 : p.group_size(),
                p.symmetric(), p.mse_clip()};
  absl::Status s = ValidateQuantConfig(c);
  if (!s.ok()) violations->push_back({field, std::string(s.message())});
  return c;
}

}  // namespace

absl::StatusOr<QuantizeJobSpec> JobSpecFromRequest(const v1::QuantizeModelRequest& request) {
  std::vector<FieldViolation> violations;
  QuantizeJobSpec spec;
  spec.source_uri = request.source_uri();
  spec.destination_uri = request.destination_uri();
  if (spec.source_uri.empty()) violations.push_back({"source_uri", "must not be empty"});
  if (spec.destination_uri.empty()) violations.push_back({"destination_uri", "must not be empty"});
  if (!spec.source_uri.empty() && spec.source_uri == spec.destination_uri) {
    violations.push_back({"destination_uri", "must differ from source_uri"});
  }
  switch (request.method_case()) {
    case v1::QuantizeModelRequest::kRtn:
      spec.quant = RtnConfig(request.rtn(), "rtn", &violations);
      break;
    case v1::QuantizeModelRequest::kInt8:
      spec.quant = {Method::kInt8, 8, -1, request.int8().symmetric(), false};
      break;
    case v1::QuantizeModelRequest::kGptq: {
      const v1::GptqParams& g = request.gptq();
      spec.quant = {Method::kGptq, g.bits() == 0 ? 4 : g.bits(), g.group_size() == 0 ? 128 : g.group_size(),
                    g.symmetric(), false, g.damp_percent() == 0 ? 0.01 : g.damp_percent(), g.act_order(), g.static_groups()};
      if (absl::Status s = ValidateQuantConfig(spec.quant); !s.ok()) violations.push_back({"gptq", std::string(s.message())});
      break;
    }
    case v1::QuantizeModelRequest::METHOD_NOT_SET:
      violations.push_back({"method", "set one of rtn, int8, gptq"});
      break;
  }
  if (request.output_format() != v1::OUTPUT_FORMAT_UNSPECIFIED && request.output_format() != v1::OUTPUT_FORMAT_GPTQ) {
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
  const v1::CalibrationData& c = request.calibration();
  spec.calibration = {c.text_uri(), c.samples() == 0 ? 32 : c.samples(), c.seqlen() == 0 ? 128 : c.seqlen(), c.seed()};
  const v1::EvaluationRequest& e = request.evaluation();
  spec.evaluation = {e.text_uri(), e.windows() == 0 ? 16 : e.windows(), e.seqlen() == 0 ? 128 : e.seqlen()};
  if (violations.empty()) {
    absl::Status s = ValidateJobSpec(spec);
    if (!s.ok()) {
      const absl::string_view message = s.message();
      const std::string field = absl::StartsWith(message, "calibration") ? "calibration"
                                : absl::StartsWith(message, "evaluation") ? "evaluation"
                                : request.method_case() == v1::QuantizeModelRequest::kInt8 ? "int8"
                                : request.method_case() == v1::QuantizeModelRequest::kGptq ? "gptq" : "rtn";
      // Core messages start with the field they are about; the violation names it already.
      violations.push_back({field, std::string(absl::StripPrefix(message, field + ": "))});
    }
  }
  if (!violations.empty()) return InvalidRequest(violations);
  return spec;
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
  if (report.evaluation) {
    v1::EvaluationResult* e = r.mutable_evaluation();
    e->set_perplexity(report.evaluation->perplexity);
    e->set_reference_perplexity(report.evaluation->reference_perplexity);
    e->set_kl_divergence(report.evaluation->kl_divergence);
    e->set_tokens(report.evaluation->tokens);
  }
  return r;
}

}  // namespace lowbit::server
