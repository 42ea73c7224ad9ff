// The API mapping: every field of QuantizeModelRequest — and of each method's parameters, the layer
// selection, calibration and evaluation — set to a value of its own must change the core job spec lowbitd
// and the local CLI run. The fields are found by reflection, so a field added to the proto without a
// mapping (or without a test value here) turns this red. The service reads request_id, labels and
// validate_only itself; they are named as such.
#include <google/protobuf/descriptor.h>
#include <google/protobuf/text_format.h>

#include <functional>
#include <map>
#include <set>
#include <string>

#include "gtest/gtest.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/proto_convert.h"

namespace lowbit {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;

// Every field of a spec, as text.
std::string Describe(const QuantizeJobSpec& s) {
  const QuantConfig& q = s.quant;
  std::vector<std::string> parts = {
      s.source_uri, s.destination_uri, std::string(MethodName(q.method)), absl::StrCat(q.bits, "/", q.group_size, "/", q.symmetric, "/",
      q.mse_clip, "/", q.damp_percent, "/", q.act_order, "/", q.static_groups, "/", q.awq_grid, "/", q.awq_clip),
      absl::StrCat(q.lut.bits, "/", static_cast<int>(q.lut.mode), "/", static_cast<int>(q.lut.granularity), "/", q.lut.group_size, "/",
                   q.lut.cluster_dim, "/", q.lut.per_channel_scale, "/", q.lut.sensitive, "/", q.lut.seed, "/", q.lut.max_iterations),
      absl::StrCat(q.vq.dim, "/", q.vq.bits, "/", q.vq.group_cols, "/", q.vq.group_rows, "/", q.vq.em_iterations, "/",
                   q.vq.update_iterations, "/", q.vq.damp_percent, "/", q.vq.seed),
      absl::StrCat(static_cast<int>(q.onebit.decomposition), "/", q.onebit.max_iterations, "/", q.onebit.refine_iterations),
      std::string(FormatName(s.format)), absl::StrCat(s.quantize_lm_head), absl::StrJoin(s.include, ","), absl::StrJoin(s.exclude, ","),
      absl::StrCat(s.overwrite), s.tokenizer_uri, absl::StrCat(s.shard_bytes), s.gguf_type, absl::StrCat(s.write_imatrix),
      absl::StrCat(s.calibration.text_uri, "/", s.calibration.samples, "/", s.calibration.seqlen, "/", s.calibration.seed),
      absl::StrCat(s.evaluation.text_uri, "/", s.evaluation.windows, "/", s.evaluation.seqlen),
      absl::StrCat(s.budget.bits_per_weight, "/", s.budget.max_bytes, "/", s.budget.max_kl, "/", absl::StrJoin(s.budget.candidates, ","),
                   "/", s.budget.measurement_uri, "/", s.budget.sensitivity_windows)};
  for (const LayerOverride& o : s.overrides) parts.push_back(absl::StrCat(o.pattern, "=", o.quant.bits, "/", o.quant.group_size));
  return absl::StrJoin(parts, " | ");
}

// A value of each field's own (in text format) and the method whose request it is set on.
struct TestValue {
  std::string text;
  std::string method = "rtn";
};
const std::map<std::string, TestValue>& TestValues() {
  static const std::map<std::string, TestValue> values = {
      {"QuantizeModelRequest.source_uri", {"\"file:///elsewhere\""}},
      {"QuantizeModelRequest.destination_uri", {"\"file:///other-out\""}},
      {"QuantizeModelRequest.output_format", {"OUTPUT_FORMAT_NATIVE"}},
      {"QuantizeModelRequest.overwrite", {"true"}},
      {"QuantizeModelRequest.tokenizer_uri", {"\"file:///tok.json\""}},
      {"QuantizeModelRequest.shard_size_bytes", {"1000000"}},
      {"QuantizeModelRequest.gguf_type", {"\"Q4_K_M\""}},
      {"QuantizeModelRequest.write_imatrix", {"true", "gptq"}},
      {"RtnParams.bits", {"3"}}, {"RtnParams.group_size", {"64"}}, {"RtnParams.symmetric", {"true"}}, {"RtnParams.mse_clip", {"true"}},
      {"Int8Params.symmetric", {"true", "int8"}},
      {"GptqParams.bits", {"3", "gptq"}}, {"GptqParams.group_size", {"32", "gptq"}}, {"GptqParams.symmetric", {"false", "gptq"}},
      {"GptqParams.damp_percent", {"0.05", "gptq"}}, {"GptqParams.act_order", {"true", "gptq"}},
      {"GptqParams.static_groups", {"true", "gptq"}},
      {"AwqParams.bits", {"3", "awq"}}, {"AwqParams.group_size", {"64", "awq"}}, {"AwqParams.symmetric", {"true", "awq"}},
      {"AwqParams.grid", {"5", "awq"}}, {"AwqParams.clip", {"false", "awq"}},
      {"LutParams.bits", {"3", "lut"}}, {"LutParams.mode", {"UNIFORM", "lut"}}, {"LutParams.granularity", {"PER_GROUPED_CHANNEL", "lut"}},
      {"LutParams.group_size", {"16", "lut"}}, {"LutParams.cluster_dim", {"2", "lut"}}, {"LutParams.per_channel_scale", {"true", "lut"}},
      {"LutParams.sensitive", {"false", "lut"}}, {"LutParams.seed", {"7", "lut"}}, {"LutParams.max_iterations", {"9", "lut"}},
      {"VqParams.dim", {"4", "vq"}}, {"VqParams.bits", {"2", "vq"}}, {"VqParams.group_cols", {"128", "vq"}},
      {"VqParams.group_rows", {"64", "vq"}}, {"VqParams.em_iterations", {"3", "vq"}}, {"VqParams.update_iterations", {"0", "vq"}},
      {"VqParams.damp_percent", {"0.05", "vq"}}, {"VqParams.seed", {"7", "vq"}},
      {"OneBitParams.decomposition", {"SVD", "onebit"}}, {"OneBitParams.max_iterations", {"9", "onebit"}},
      {"OneBitParams.refine_iterations", {"2", "onebit"}},
      {"LayerSelection.include", {"\"*.q_proj.weight\""}}, {"LayerSelection.exclude", {"\"*.k_proj.weight\""}},
      {"LayerSelection.quantize_lm_head", {"true"}},
      {"LayerSelection.overrides", {"{ pattern: \"*.v_proj.weight\" rtn { bits: 8 } }"}},
      {"CalibrationData.text_uri", {"\"file:///other.txt\"", "gptq"}}, {"CalibrationData.samples", {"7", "gptq"}},
      {"CalibrationData.seqlen", {"33", "gptq"}}, {"CalibrationData.seed", {"5", "gptq"}},
      {"EvaluationRequest.text_uri", {"\"file:///eval.txt\""}}, {"EvaluationRequest.windows", {"3"}},
      {"EvaluationRequest.seqlen", {"33"}},
      {"BitBudget.bits_per_weight", {"4.5", "gptq"}}, {"BitBudget.max_bytes", {"1000000", "gptq"}},
      {"BitBudget.max_kl", {"0.05", "gptq"}}, {"BitBudget.candidates", {"\"gptq-4b-g32\"", "gptq"}},
      {"BitBudget.measurement_uri", {"\"file:///m.json\"", "gptq"}}, {"BitBudget.sensitivity_windows", {"4", "gptq"}},
  };
  return values;
}

// Read by the service, not the job.
const std::set<std::string> kServiceFields = {"QuantizeModelRequest.request_id", "QuantizeModelRequest.labels",
                                              "QuantizeModelRequest.validate_only"};

v1::QuantizeModelRequest Base(const std::string& method) {
  v1::QuantizeModelRequest r;
  r.set_source_uri("file:///model");
  r.set_destination_uri("file:///out");
  const FieldDescriptor* f = r.GetDescriptor()->FindFieldByName(method);
  r.GetReflection()->MutableMessage(&r, f);  // selects the method with its defaults
  // Calibrated methods need a text; it stays the same in the base and the changed request.
  if (method == "gptq" || method == "awq" || method == "vq" || method == "onebit") r.mutable_calibration()->set_text_uri("file:///calib.txt");
  return r;
}

// The message inside `r` that holds fields of `type` ("QuantizeModelRequest", "GptqParams", ...).
Message* Holder(v1::QuantizeModelRequest* r, const std::string& type) {
  if (type == "QuantizeModelRequest") return r;
  for (int i = 0; i < r->GetDescriptor()->field_count(); ++i) {
    const FieldDescriptor* f = r->GetDescriptor()->field(i);
    if (f->type() == FieldDescriptor::TYPE_MESSAGE && f->message_type()->name() == type && !f->is_repeated() &&
        (f->containing_oneof() == nullptr || r->GetReflection()->HasField(*r, f))) {
      return r->GetReflection()->MutableMessage(r, f);
    }
  }
  return nullptr;
}

TEST(JobRequestTest, EveryFieldReachesTheJobSpec) {
  std::vector<const google::protobuf::Descriptor*> messages = {v1::QuantizeModelRequest::descriptor()};
  for (const char* name : {"RtnParams", "Int8Params", "GptqParams", "AwqParams", "LutParams", "VqParams", "OneBitParams",
                           "LayerSelection", "CalibrationData", "EvaluationRequest", "BitBudget"}) {
    messages.push_back(google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(absl::StrCat("lowbit.v1.", name)));
  }
  int checked = 0;
  for (const google::protobuf::Descriptor* m : messages) {
    ASSERT_NE(m, nullptr);
    for (int i = 0; i < m->field_count(); ++i) {
      const FieldDescriptor* f = m->field(i);
      const std::string key = absl::StrCat(m->name(), ".", f->name());
      if (kServiceFields.count(key)) continue;
      // The oneof's and the sub-messages' own fields are checked one by one.
      if (m == v1::QuantizeModelRequest::descriptor() && f->type() == FieldDescriptor::TYPE_MESSAGE) continue;
      const auto it = TestValues().find(key);
      ASSERT_NE(it, TestValues().end()) << key << ": a request field with no test value (and perhaps no mapping)";
      v1::QuantizeModelRequest base = Base(it->second.method), changed = base;
      Message* holder = Holder(&changed, m->name());
      ASSERT_NE(holder, nullptr) << key;
      ASSERT_TRUE(google::protobuf::TextFormat::ParseFieldValueFromString(it->second.text, f, holder)) << key;
      auto before = server::JobSpecFromRequest(base);
      auto after = server::JobSpecFromRequest(changed);
      ASSERT_TRUE(before.ok()) << key << ": " << before.status();
      ASSERT_TRUE(after.ok()) << key << " = " << it->second.text << ": " << after.status();
      EXPECT_NE(Describe(*before), Describe(*after)) << key << " = " << it->second.text << " does not reach the job spec";
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<int>(TestValues().size())) << "every test value belongs to a field";
}

// The one format mapping, both ways, for every core format.
TEST(JobRequestTest, OutputFormatsMapBothWays) {
  for (OutputFormat f : {OutputFormat::kAuto, OutputFormat::kGptq, OutputFormat::kAwq, OutputFormat::kNative, OutputFormat::kGguf}) {
    v1::QuantizeModelRequest r = Base("rtn");
    r.set_output_format(server::ToProto(f));
    auto spec = server::JobSpecFromRequest(r);
    if (f == OutputFormat::kNative) continue;  // rtn takes native too; checked below with lut
    ASSERT_TRUE(spec.ok()) << FormatName(f) << ": " << spec.status();
    EXPECT_EQ(spec->format, f) << FormatName(f);
  }
  v1::QuantizeModelRequest r = Base("lut");
  r.set_output_format(server::ToProto(OutputFormat::kNative));
  EXPECT_EQ(server::JobSpecFromRequest(r)->format, OutputFormat::kNative);
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// Everything a client controls is bounded, and the refusal names the field and the limit.
TEST(JobRequestTest, OversizedFieldsAreRefusedNamingTheFieldAndTheLimit) {
  auto refusal = [](const std::function<void(v1::QuantizeModelRequest&)>& change) {
    v1::QuantizeModelRequest r;
    r.set_source_uri("m.bin");
    r.set_destination_uri("out");
    r.mutable_rtn()->set_bits(4);
    EXPECT_TRUE(server::JobSpecFromRequest(r).ok());
    change(r);
    return server::JobSpecFromRequest(r).status();
  };
  const std::string huge(5000, 'x');
  struct Case {
    const char* field;
    std::function<void(v1::QuantizeModelRequest&)> change;
  };
  const Case cases[] = {
      {"source_uri", [&](auto& r) { r.set_source_uri(huge); }},
      {"destination_uri", [&](auto& r) { r.set_destination_uri(huge); }},
      {"tokenizer_uri", [&](auto& r) { r.set_tokenizer_uri(huge); }},
      {"calibration.text_uri", [&](auto& r) { r.mutable_calibration()->set_text_uri(huge); }},
      {"evaluation.text_uri", [&](auto& r) { r.mutable_evaluation()->set_text_uri(huge); }},
      {"request_id", [&](auto& r) { r.set_request_id(std::string(129, 'r')); }},
      {"labels", [&](auto& r) { for (int i = 0; i < 65; ++i) (*r.mutable_labels())[absl::StrCat("k", i)] = "v"; }},
      {"labels[team]", [&](auto& r) { (*r.mutable_labels())["team"] = std::string(1 << 20, 'v'); }},
      {"layers.include", [&](auto& r) { for (int i = 0; i < 257; ++i) r.mutable_layers()->add_include("*"); }},
      {"layers.exclude[0]", [&](auto& r) { r.mutable_layers()->add_exclude(huge); }},
      {"layers.overrides[0].pattern", [&](auto& r) { r.mutable_layers()->add_overrides()->set_pattern(huge); }},
  };
  for (const Case& c : cases) {
    const absl::Status s = refusal(c.change);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(s.message().find(c.field), absl::string_view::npos) << c.field << ": " << s.message();
    EXPECT_NE(s.message().find("at most"), absl::string_view::npos) << s.message();
    EXPECT_LT(s.message().size(), 600u) << "the refusal does not echo the oversized value";
  }
}

}  // namespace
}  // namespace lowbit
