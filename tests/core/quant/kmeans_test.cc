// k-means against an O(k·n²) dynamic program written here from the definition (the exact 1-D optimum),
// and the properties every Lloyd run must have: a non-increasing objective and determinism for a seed.
#include "core/quant/kmeans.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "gtest/gtest.h"

namespace lowbit {
namespace {

// Weighted squared error of assigning every point to its nearest centroid.
double Objective(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& centroids) {
  double total = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    double best = std::numeric_limits<double>::infinity();
    for (float c : centroids) best = std::min(best, (static_cast<double>(x[i]) - c) * (static_cast<double>(x[i]) - c));
    total += (w.empty() ? 1.0 : w[i]) * best;
  }
  return total;
}

// The optimal k-clustering error by the textbook DP over the sorted points: best[m][j] over all splits.
double OptimalObjective(std::vector<float> x, std::vector<float> w, int k) {
  std::vector<size_t> order(x.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  const size_t n = x.size();
  auto cost = [&](size_t i, size_t j) {  // points [i, j) of the sorted order, around their weighted mean
    double sw = 0, sx = 0;
    for (size_t t = i; t < j; ++t) sw += w[order[t]], sx += w[order[t]] * x[order[t]];
    if (sw == 0) return 0.0;
    double e = 0;
    for (size_t t = i; t < j; ++t) e += w[order[t]] * std::pow(x[order[t]] - sx / sw, 2);
    return e;
  };
  std::vector<std::vector<double>> best(static_cast<size_t>(k) + 1, std::vector<double>(n + 1, 1e300));
  best[0][0] = 0;
  for (int m = 1; m <= k; ++m)
    for (size_t j = 1; j <= n; ++j)
      for (size_t i = 0; i < j; ++i) best[m][j] = std::min(best[m][j], best[m - 1][i] + cost(i, j));
  double answer = 1e300;
  for (int m = 1; m <= k; ++m) answer = std::min(answer, best[m][n]);  // fewer clusters when points repeat
  return answer;
}

TEST(KMeans1DTest, ReachesTheExactOptimumOnSmallInputs) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (int trial = 0; trial < 40; ++trial) {
    const int n = 5 + trial % 30;
    const int k = 2 + trial % 5;
    std::vector<float> x(static_cast<size_t>(n)), w(x.size(), 1.0f);
    for (float& v : x) v = std::round(normal(rng) * 8) / 4;  // repeats happen
    const bool weighted = trial % 2 == 1;
    if (weighted) {
      for (float& v : w) v = 0.1f + std::abs(normal(rng));
    }
    const KMeansResult r = KMeans1D(x.data(), weighted ? w.data() : nullptr, n, {k, 50, 0, 256});
    ASSERT_EQ(r.centroids.size(), static_cast<size_t>(k));
    EXPECT_TRUE(std::is_sorted(r.centroids.begin(), r.centroids.end()));
    const double optimum = OptimalObjective(x, w, k);
    EXPECT_NEAR(Objective(x, w, r.centroids), optimum, 1e-6 * (1 + optimum)) << "trial " << trial;
  }
}

TEST(KMeans1DTest, FewerDistinctValuesThanCentroidsAreReproducedExactly) {
  const std::vector<float> x = {0.5f, -1.0f, 0.5f, 2.0f, -1.0f};
  const KMeansResult r = KMeans1D(x.data(), nullptr, 5, {8, 50, 0, 256});
  EXPECT_EQ(Objective(x, {}, r.centroids), 0.0);
}

TEST(KMeans1DTest, LargeInputsRefineMonotonicallyFromTheCompressedOptimum) {
  std::mt19937 rng(3);
  std::student_t_distribution<float> heavy(4.0f);
  std::vector<float> x(200000);
  for (float& v : x) v = heavy(rng);
  const KMeansResult r = KMeans1D(x.data(), nullptr, static_cast<int64_t>(x.size()), {16, 100, 0, 256});
  ASSERT_FALSE(r.objective.empty());
  for (size_t i = 1; i < r.objective.size(); ++i) EXPECT_LE(r.objective[i], r.objective[i - 1] * (1 + 1e-12));
  EXPECT_NEAR(Objective(x, {}, r.centroids), r.objective.back(), 1e-3 * r.objective.back());
  // Lloyd from a uniform start on the same data ends no better than this.
  std::vector<float> uniform(16);
  const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
  for (int i = 0; i < 16; ++i) uniform[i] = *lo + (*hi - *lo) * (i + 0.5f) / 16;
  EXPECT_LT(Objective(x, {}, r.centroids), Objective(x, {}, uniform));
}

TEST(KMeansTest, ObjectiveNeverIncreasesAndTheSeedDecides) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  const int64_t n = 3000;
  const int d = 2;
  std::vector<float> x(static_cast<size_t>(n * d)), w(x.size());
  for (int64_t i = 0; i < n; ++i) {
    const float cluster = static_cast<float>(i % 5);
    x[i * d] = cluster + 0.3f * normal(rng);
    x[i * d + 1] = -cluster + 0.3f * normal(rng);
    w[i * d] = 1.0f, w[i * d + 1] = 0.25f + static_cast<float>(i % 3);
  }
  const KMeansOptions options{8, 100, 42, 0};
  const KMeansResult a = KMeans(x.data(), w.data(), n, d, options);
  ASSERT_GE(a.objective.size(), 2u);
  for (size_t i = 1; i < a.objective.size(); ++i) EXPECT_LE(a.objective[i], a.objective[i - 1] * (1 + 1e-12)) << i;
  EXPECT_EQ(a.centroids, KMeans(x.data(), w.data(), n, d, options).centroids);
  KMeansOptions other = options;
  other.seed = 43;
  EXPECT_NE(a.centroids, KMeans(x.data(), w.data(), n, d, other).centroids);
  // Every point's nearest centroid, found by brute force, is what NearestCentroid returns.
  for (int64_t i = 0; i < n; i += 97) {
    int best = 0;
    double best_d = 1e300;
    for (int c = 0; c < 8; ++c) {
      const double dist = w[i * d] * std::pow(x[i * d] - a.centroids[c * d], 2) +
                          w[i * d + 1] * std::pow(x[i * d + 1] - a.centroids[c * d + 1], 2);
      if (dist < best_d) best_d = dist, best = c;
    }
    EXPECT_EQ(NearestCentroid(x.data() + i * d, w.data() + i * d, a.centroids.data(), 8, d), best);
  }
}

}  // namespace
}  // namespace lowbit
