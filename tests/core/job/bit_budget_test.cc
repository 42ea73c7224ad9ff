// Bit budgets: the candidate grammar, the output error against a direct sum over the inputs, the
// measurement file, and the allocation's budget (never exceeded, the KL target met, the uniform baseline).
#include "core/job/bit_budget.h"

#include <random>

#include "gtest/gtest.h"
#include "core/quant/rtn.h"
#include "tests/test_util/calibration_inputs.h"

namespace lowbit {
namespace {

TEST(BitBudgetTest, CandidatesParseIntoTheirMethodsSettings) {
  QuantConfig q = *ParseCandidate("gptq-4b-g32");
  EXPECT_EQ(q.method, Method::kGptq);
  EXPECT_EQ(q.bits, 4);
  EXPECT_EQ(q.group_size, 32);
  EXPECT_FALSE(q.symmetric);
  q = *ParseCandidate("rtn-8b-ch-sym");
  EXPECT_EQ(q.method, Method::kRtn);
  EXPECT_EQ(q.group_size, -1);
  EXPECT_TRUE(q.symmetric);
  EXPECT_EQ(ParseCandidate("gptq-3b")->group_size, 128);
  EXPECT_TRUE(ParseCandidate("gptq-4b-g32-ao")->act_order);
  q = *ParseCandidate("lut-4b-g16");
  EXPECT_EQ(q.method, Method::kLut);
  EXPECT_EQ(q.lut.bits, 4);
  EXPECT_EQ(q.lut.granularity, LutGranularity::kPerGroupedChannel);
  EXPECT_EQ(q.lut.group_size, 16);
  EXPECT_EQ(ParseCandidate("lut-3b")->lut.granularity, LutGranularity::kPerTensor);
  q = *ParseCandidate("vq-3b-d4");
  EXPECT_EQ(q.vq.bits, 3);
  EXPECT_EQ(q.vq.dim, 4);
  EXPECT_EQ(ParseCandidate("onebit")->method, Method::kOneBit);
  for (const char* bad : {"awq-4b-g128", "gptq", "gptq-4x", "gptq-4b-g0", "gptq-9b", "vq-2b-g32", "lut-4b-ch", "rtn-4b-ao", "onebit-1b", "", "int8"}) {
    absl::StatusOr<QuantConfig> r = ParseCandidate(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseCandidate("gptq-4x").status().message().find("unknown part '4x'"), std::string::npos);
  for (const OutputFormat f : {OutputFormat::kNative, OutputFormat::kGptq}) {
    EXPECT_TRUE(ValidateCandidates(DefaultCandidates(f), f).ok());
  }
  EXPECT_EQ(ValidateCandidates({"vq-3b-d2"}, OutputFormat::kGptq).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateCandidates({"gptq-5b-g32"}, OutputFormat::kGptq).code(), absl::StatusCode::kInvalidArgument)
      << "GPTQ's engines load 2, 3, 4 and 8 bits";
  EXPECT_EQ(ValidateCandidates({}, OutputFormat::kGguf).code(), absl::StatusCode::kInvalidArgument);
}

TEST(BitBudgetTest, BudgetNeedsExactlyOneTarget) {
  BitBudget b;
  EXPECT_FALSE(ValidateBudget(b, OutputFormat::kNative).ok());
  b.bits_per_weight = 4;
  EXPECT_TRUE(ValidateBudget(b, OutputFormat::kNative).ok());
  b.max_kl = 0.1;
  EXPECT_FALSE(ValidateBudget(b, OutputFormat::kNative).ok());
  b.max_kl = 0;
  b.bits_per_weight = 40;
  EXPECT_FALSE(ValidateBudget(b, OutputFormat::kNative).ok());
}

TEST(BitBudgetTest, OutputErrorIsTheMeanSquaredOutputErrorOverTheInputs) {
  const testing::LayerInputs inputs = testing::CorrelatedInputs(64, 300, 5, {3, 17}, 8.0f);
  const Matrix w = testing::RandomMatrix(48, 64, 9);
  for (const int bits : {2, 4, 8}) {
    const QuantizedLayer q = *QuantizeRtn(w, {bits, 16});
    const double direct = testing::OutputError(w, Dequantize(q), inputs) / static_cast<double>(inputs.n);
    EXPECT_NEAR(LayerOutputError(w, q, inputs.stats), direct, 1e-4 * direct) << bits << " bits";
  }
  // A layer of more rows than one chunk of 4M values holds (2048 at 2048 columns).
  const testing::LayerInputs wide = testing::CorrelatedInputs(2048, 64, 6);
  const Matrix big = testing::RandomMatrix(2100, 2048, 10);
  const QuantizedLayer q = *QuantizeRtn(big, {3, 128});
  const double direct = testing::OutputError(big, Dequantize(q), wide) / static_cast<double>(wide.n);
  EXPECT_NEAR(LayerOutputError(big, q, wide.stats), direct, 1e-3 * direct);
}

Measurement RandomMeasurement(int layers, int candidates, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.2, 1.0);
  Measurement m;
  for (int c = 0; c < candidates; ++c) m.candidates.push_back("gptq-" + std::to_string(c + 2) + "b-ch");
  for (int i = 0; i < layers; ++i) {
    LayerMeasurement l{"model.layers." + std::to_string(i) + ".mlp.up_proj.weight", 64, 64 + 32 * (i % 3), {}, {}};
    const uint64_t n = static_cast<uint64_t>(l.rows * l.cols);
    for (int c = 0; c < candidates; ++c) {
      const int bits = c + 2;
      l.bits.push_back(n * static_cast<uint64_t>(bits) + 24 * static_cast<uint64_t>(l.rows));
      l.error.push_back(u(rng) * std::pow(4.0, -bits));
    }
    if (i % 5 == 0) l.bits[0] = 0;  // a setting the format cannot hold at this shape
    l.probe_error = u(rng);
    l.probe_kl = u(rng) * 0.1;
    m.layers.push_back(std::move(l));
  }
  return m;
}

TEST(BitBudgetTest, PlansNeverExceedTheBudgetAndMeetTheKlTarget) {
  const Measurement m = RandomMeasurement(24, 5, 3);
  double last_kl = 1e9;
  for (const double bpw : {2.8, 3.5, 4.0, 4.6, 5.5, 6.4}) {
    BitBudget b;
    b.bits_per_weight = bpw;
    absl::StatusOr<BudgetPlan> p = PlanBudget(m, b);
    ASSERT_TRUE(p.ok()) << p.status();
    EXPECT_LE(p->bits, static_cast<uint64_t>(bpw * static_cast<double>(p->weights))) << bpw;
    EXPECT_LE(p->lower_bound_kl, p->predicted_kl + 1e-12);
    EXPECT_LT(p->predicted_kl, last_kl) << "more bits, less predicted KL";
    last_kl = p->predicted_kl;
    double kl = 0;
    uint64_t bits = 0;
    for (size_t i = 0; i < m.layers.size(); ++i) {
      ASSERT_NE(m.layers[i].bits[p->choice[i]], 0u) << "a setting the format cannot hold";
      kl += m.layers[i].predicted_kl(p->choice[i]);
      bits += m.layers[i].bits[p->choice[i]];
    }
    EXPECT_NEAR(kl, p->predicted_kl, 1e-12);
    EXPECT_EQ(bits, p->bits);
    // The allocation is at least as good as the best single setting within the same budget.
    for (size_t c = 0; c < m.candidates.size(); ++c) {
      const BudgetPlan u = UniformPlan(m, static_cast<int>(c));
      if (u.bits <= p->budget_bits) {
        EXPECT_LE(p->predicted_kl, u.predicted_kl + 1e-12) << m.candidates[c];
      }
    }
  }
  BitBudget bytes;
  bytes.max_bytes = 24 * 64 * 96 / 2;  // about 4 bits per weight
  absl::StatusOr<BudgetPlan> by_size = PlanBudget(m, bytes);
  ASSERT_TRUE(by_size.ok());
  EXPECT_LE(by_size->bits, 8 * bytes.max_bytes);

  BitBudget kl;
  kl.max_kl = 1e-3;
  absl::StatusOr<BudgetPlan> smallest = PlanBudget(m, kl);
  ASSERT_TRUE(smallest.ok()) << smallest.status();
  EXPECT_LE(smallest->predicted_kl, 1e-3);
  // A budget a little smaller does worse than the target.
  BitBudget less;
  less.max_bytes = (smallest->bits - smallest->weights / 50) / 8;
  EXPECT_GT(PlanBudget(m, less)->predicted_kl, 1e-3);

  BitBudget tiny;
  tiny.bits_per_weight = 1;
  EXPECT_EQ(PlanBudget(m, tiny).status().code(), absl::StatusCode::kOutOfRange);
  BitBudget unreachable;
  unreachable.max_kl = 1e-30;
  EXPECT_EQ(PlanBudget(m, unreachable).status().code(), absl::StatusCode::kOutOfRange);
}

TEST(BitBudgetTest, MeasurementsRoundTripAndMalformedOnesAreRefused) {
  Measurement m = RandomMeasurement(3, 4, 1);
  m.key = "abc";
  m.seconds = 2.5;
  absl::StatusOr<Measurement> back = Measurement::FromJson(m.ToJson().dump());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->key, "abc");
  EXPECT_EQ(back->candidates, m.candidates);
  ASSERT_EQ(back->layers.size(), 3u);
  EXPECT_EQ(back->layers[1].bits, m.layers[1].bits);
  EXPECT_EQ(back->layers[1].error, m.layers[1].error);
  EXPECT_DOUBLE_EQ(back->layers[2].sensitivity(), m.layers[2].sensitivity());

  nlohmann::json j = m.ToJson();
  j["layers"][0]["error"].erase(0);
  EXPECT_EQ(Measurement::FromJson(j.dump()).status().code(), absl::StatusCode::kInvalidArgument);
  j = m.ToJson();
  j["layers"][1]["error"][0] = -1.0;
  EXPECT_EQ(Measurement::FromJson(j.dump()).status().code(), absl::StatusCode::kInvalidArgument);
  j = m.ToJson();
  j["layers"][2].erase("probe_kl");
  EXPECT_EQ(Measurement::FromJson(j.dump()).status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* text : {"", "[]", "{\"key\": 1}", "{\"key\": \"a\", \"candidates\": [1], \"layers\": []}", "{"}) {
    EXPECT_EQ(Measurement::FromJson(text).status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

}  // namespace
}  // namespace lowbit
