// The bit allocator against brute force (every combination of candidates) on small instances, its dual
// bound against the optimum, and on a model-sized instance the gap between its choice and that bound.
#include "core/quant/bit_allocation.h"

#include <cmath>
#include <random>

#include "gtest/gtest.h"

namespace lowbit {
namespace {

using Layers = std::vector<std::vector<AllocationCandidate>>;

// The least cost within the budget over every combination, or -1 if none fits.
double BruteForce(const Layers& layers, uint64_t budget) {
  double best = -1;
  std::vector<size_t> at(layers.size(), 0);
  for (;;) {
    uint64_t bits = 0;
    double cost = 0;
    for (size_t i = 0; i < layers.size(); ++i) {
      bits += layers[i][at[i]].bits;
      cost += layers[i][at[i]].cost;
    }
    if (bits <= budget && (best < 0 || cost < best)) best = cost;
    size_t i = 0;
    while (i < layers.size() && ++at[i] == layers[i].size()) at[i++] = 0;
    if (i == layers.size()) return best;
  }
}

Layers RandomLayers(std::mt19937& rng) {
  std::uniform_int_distribution<int> count(1, 5), bits(1, 60);
  std::uniform_real_distribution<double> cost(0, 1);
  Layers layers(std::uniform_int_distribution<int>(1, 7)(rng));
  for (auto& layer : layers) {
    layer.resize(count(rng));
    for (AllocationCandidate& c : layer) c = {static_cast<uint64_t>(bits(rng)), cost(rng)};
  }
  return layers;
}

uint64_t BitsOf(const Layers& layers, const Allocation& a) {
  uint64_t bits = 0;
  for (size_t i = 0; i < layers.size(); ++i) bits += layers[i][a.choice[i]].bits;
  return bits;
}

double CostOf(const Layers& layers, const Allocation& a) {
  double cost = 0;
  for (size_t i = 0; i < layers.size(); ++i) cost += layers[i][a.choice[i]].cost;
  return cost;
}

TEST(BitAllocationTest, TheExactSearchFindsWhatBruteForceFinds) {
  std::mt19937 rng(7);
  int solved = 0;
  for (int trial = 0; trial < 2000; ++trial) {
    const Layers layers = RandomLayers(rng);
    const uint64_t budget = std::uniform_int_distribution<uint64_t>(1, 60 * layers.size())(rng);
    const double optimum = BruteForce(layers, budget);
    absl::StatusOr<Allocation> a = AllocateBits(layers, budget);
    if (optimum < 0) {
      EXPECT_EQ(a.status().code(), absl::StatusCode::kOutOfRange);
      continue;
    }
    ASSERT_TRUE(a.ok()) << a.status();
    ++solved;
    EXPECT_TRUE(a->exact);
    EXPECT_LE(a->bits, budget);
    EXPECT_EQ(a->bits, BitsOf(layers, *a));
    EXPECT_NEAR(a->cost, CostOf(layers, *a), 1e-12);
    EXPECT_NEAR(a->cost, optimum, 1e-12) << "trial " << trial;
  }
  EXPECT_GT(solved, 1000);
}

TEST(BitAllocationTest, PricedChoicesStayWithinTheBudgetAndTheBoundIsBelowTheOptimum) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    const Layers layers = RandomLayers(rng);
    const uint64_t budget = std::uniform_int_distribution<uint64_t>(1, 60 * layers.size())(rng);
    const double optimum = BruteForce(layers, budget);
    if (optimum < 0) continue;
    absl::StatusOr<Allocation> a = AllocateBits(layers, budget, {.max_frontier = 0});  // no exact search
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_FALSE(a->exact);
    EXPECT_LE(a->bits, budget);
    EXPECT_EQ(a->bits, BitsOf(layers, *a));
    EXPECT_NEAR(a->cost, CostOf(layers, *a), 1e-9);
    EXPECT_GE(a->cost, optimum - 1e-12);
    EXPECT_LE(a->lower_bound, optimum + 1e-9) << "trial " << trial << ": the dual bound is a bound";
    // What the price leaves is spent: no single layer could move to a cheaper candidate that still fits.
    for (size_t i = 0; i < layers.size(); ++i) {
      const AllocationCandidate& now = layers[i][a->choice[i]];
      for (const AllocationCandidate& c : layers[i]) {
        if (c.cost < now.cost) {
          EXPECT_GT(a->bits - now.bits + c.bits, budget) << "trial " << trial << ", layer " << i;
        }
      }
    }
  }
}

// A model-sized instance with the shape of real error curves: 224 layers (Llama-2-7B's linear layers),
// each with candidates of 2..8 bits at two group sizes whose cost falls as 4^-bits, scaled by the layer's
// sensitivity. Too large for the exact search; the priced choice is within 1% of the dual bound.
TEST(BitAllocationTest, OnAModelSizedInstanceThePricedChoiceIsWithinOnePercentOfTheBound) {
  std::mt19937 rng(3);
  std::lognormal_distribution<double> sensitivity(0, 1.5);
  Layers layers(224);
  uint64_t weights_total = 0;
  for (auto& layer : layers) {
    const uint64_t weights = (std::uniform_int_distribution<int>(0, 1)(rng) ? 4096ull * 4096 : 4096ull * 11008);
    weights_total += weights;
    const double s = sensitivity(rng);
    for (int b = 2; b <= 8; ++b) {
      for (int group : {32, 128}) {
        // Codes plus an FP16 scale and a packed zero per group; the smaller group is a little more exact.
        const uint64_t bits = weights * b + weights / group * (16 + b);
        layer.push_back({bits, s * std::pow(4.0, -b) * (group == 32 ? 0.8 : 1.0)});
      }
    }
  }
  for (double bpw : {3.0, 4.0, 4.5, 6.0}) {
    const uint64_t budget = static_cast<uint64_t>(bpw * static_cast<double>(weights_total));
    absl::StatusOr<Allocation> a = AllocateBits(layers, budget, {.max_frontier = 2000});
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_FALSE(a->exact) << "the priced search ran";
    EXPECT_LE(a->bits, budget);
    EXPECT_GE(a->cost, a->lower_bound);
    EXPECT_LE(a->cost - a->lower_bound, 0.01 * a->cost) << bpw << " bits per weight";
  }
}

TEST(BitAllocationTest, MoreBudgetNeverCostsMore) {
  std::mt19937 rng(5);
  const Layers layers = [&] {
    Layers l;
    while (l.size() < 6) l = RandomLayers(rng);
    return l;
  }();
  double previous = std::numeric_limits<double>::infinity();
  for (uint64_t budget = 1; budget <= 400; ++budget) {
    absl::StatusOr<Allocation> a = AllocateBits(layers, budget);
    if (!a.ok()) continue;
    EXPECT_LE(a->cost, previous + 1e-15) << budget;
    previous = a->cost;
  }
}

TEST(BitAllocationTest, BadInstancesAreRefusedClearly) {
  EXPECT_EQ(AllocateBits({{{8, 0.1}}, {}}, 100).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AllocateBits({{{8, -0.1}}}, 100).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(AllocateBits({{{8, std::nan("")}}}, 100).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<Allocation> tight = AllocateBits({{{8, 0.1}, {4, 0.2}}, {{6, 0.1}}}, 9);
  EXPECT_EQ(tight.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(tight.status().message().find("10 bits"), std::string::npos) << tight.status();
  absl::StatusOr<Allocation> none = AllocateBits({}, 0);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->bits, 0u);
}

}  // namespace
}  // namespace lowbit
