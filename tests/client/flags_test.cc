// The CLI's half of the API mapping: every `lowbit` flag that describes a job, given a value of its own,
// changes the QuantizeModelRequest the flags build (the request lowbitd gets and the local quantize
// command reads through lowbitd's JobSpecFromRequest, tests/server/job_request_test.cc). The flags are
// found in Abseil's registry, so a job flag added without a mapping (or a test value here) turns this red.
#include "client/flags.h"

#include <google/protobuf/util/message_differencer.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace lowbit::cli {
namespace {

struct TestValue {
  std::string value;
  std::string method = "rtn";  ///< "": no --method (a budget job takes its methods from its candidates)
};

const std::map<std::string, TestValue> kJobFlags = {
    {"input", {"/m"}}, {"output", {"/o"}}, {"method", {"gptq"}}, {"format", {"native"}},
    {"grid", {"5", "awq"}}, {"clip", {"false", "awq"}}, {"mode", {"uniform", "lut"}}, {"granularity", {"per_grouped_channel", "lut"}},
    {"cluster_dim", {"2", "lut"}}, {"per_channel_scale", {"true", "lut"}}, {"sensitive", {"false", "lut"}}, {"seed", {"7", "vq"}},
    {"max_iterations", {"9", "onebit"}}, {"dim", {"4", "vq"}}, {"group_cols", {"128", "vq"}}, {"group_rows", {"64", "vq"}},
    {"em_iterations", {"3", "vq"}}, {"update_iterations", {"0", "vq"}}, {"decomposition", {"svd", "onebit"}},
    {"refine_iterations", {"2", "onebit"}}, {"damp_percent", {"0.05", "gptq"}}, {"act_order", {"true", "gptq"}},
    {"static_groups", {"true", "gptq"}}, {"calib", {"/c.txt"}}, {"calib_samples", {"7"}}, {"calib_seqlen", {"33"}},
    {"calib_seed", {"5"}}, {"eval_text", {"/e.txt"}}, {"eval_windows", {"3"}}, {"eval_seqlen", {"33"}}, {"bits", {"3"}},
    {"group_size", {"64"}}, {"sym", {"true"}}, {"mse_clip", {"true"}}, {"quantize_lm_head", {"true"}}, {"include", {"*.q_proj.weight"}},
    {"exclude", {"*.k_proj.weight"}}, {"override", {"*.v_proj.weight=8"}}, {"overwrite", {"true"}}, {"tokenizer", {"/t.json"}},
    {"gguf_type", {"Q4_K"}}, {"imatrix", {"true", "gptq"}}, {"shard_size", {"1G"}}, {"request_id", {"r-1"}}, {"dry_run", {"true"}}, {"label", {"team=nlp"}},
    {"target_bpw", {"4.5", ""}}, {"max_size", {"2G", ""}}, {"max_kl", {"0.05", ""}}, {"candidates", {"gptq-4b-g32,vq-3b-d2"}},
    {"measurement", {"/m.json"}}, {"sensitivity_windows", {"4"}},
};
// Flags of other commands (eval, generate, tokenize) and of how a job runs here, not what it is.
const std::set<std::string> kOtherFlags = {"reference", "text", "distributions", "json", "threads", "model", "jsonl", "vocab_size",
                                           "steps", "memory_limit", "s3_endpoint", "s3_region"};

// Every flag back to its default (absl::FlagSaver would log each restore).
void ResetFlags() {
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    std::string error;
    if (absl::StrContains(flag->Filename(), "client/flags.cc")) {
      EXPECT_TRUE(flag->ParseFrom(flag->DefaultValue(), &error)) << error;
    }
  }
}

v1::QuantizeModelRequest RequestWith(const std::string& method, const std::string& name, const std::string& value) {
  ResetFlags();
  std::vector<std::string> args = {"lowbit"};
  if (!method.empty()) args.push_back("--method=" + method);
  if (!name.empty()) args.push_back("--" + name + "=" + value);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  NormalizeFlagNames(static_cast<int>(argv.size()), argv.data());
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    const size_t eq = a.find('=');
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(a.substr(2, eq - 2));
    std::string error;
    EXPECT_TRUE(flag != nullptr && flag->ParseFrom(a.substr(eq + 1), &error)) << a << ": " << error;
  }
  absl::StatusOr<v1::QuantizeModelRequest> r = RequestFromFlags();
  EXPECT_TRUE(r.ok()) << name << "=" << value << ": " << r.status();
  return r.ok() ? *r : v1::QuantizeModelRequest();
}

TEST(FlagsTest, EveryJobFlagReachesTheRequest) {
  int checked = 0;
  for (const auto& [flag_name, flag] : absl::GetAllFlags()) {
    const std::string name(flag_name);
    if (!absl::StrContains(flag->Filename(), "client/flags.cc") || kOtherFlags.count(name)) continue;
    const auto it = kJobFlags.find(name);
    ASSERT_NE(it, kJobFlags.end()) << "--" << name << ": a job flag with no test value (and perhaps no mapping)";
    const v1::QuantizeModelRequest before = RequestWith(it->second.method, "", ""),
                                   after = RequestWith(it->second.method, name, it->second.value);
    EXPECT_FALSE(google::protobuf::util::MessageDifferencer::Equals(before, after))
        << "--" << name << "=" << it->second.value << " does not reach the request";
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(kJobFlags.size())) << "every test value belongs to a flag";
}

TEST(FlagsTest, GptqIsSymmetricUnlessToldOtherwise) {
  EXPECT_FALSE(RequestWith("gptq", "", "").gptq().has_symmetric()) << "unset: the API's default (symmetric)";
  const v1::QuantizeModelRequest nosym = RequestWith("gptq", "sym", "false");
  EXPECT_TRUE(nosym.gptq().has_symmetric() && !nosym.gptq().symmetric());
}

}  // namespace
}  // namespace lowbit::cli
