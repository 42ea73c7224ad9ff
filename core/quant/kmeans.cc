#include "core/quant/kmeans.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

namespace lowbit {
namespace {

// A deterministic uniform draw in [0, 1): std::uniform_real_distribution differs between libraries.
double Uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Sorts (value, weight) pairs by value: an LSD radix sort on the order-preserving bit pattern of the
// value (three 11-bit passes), several times faster than std::sort on millions of weights.
void SortByValue(std::vector<uint64_t>* items) {
  std::vector<uint64_t> buffer(items->size());
  for (int shift : {32, 43, 54}) {
    std::vector<size_t> count(2049, 0);
    for (uint64_t v : *items) ++count[((v >> shift) & 2047) + 1];
    for (size_t i = 1; i < count.size(); ++i) count[i] += count[i - 1];
    for (uint64_t v : *items) buffer[count[(v >> shift) & 2047]++] = v;
    items->swap(buffer);
  }
}

uint32_t OrderedKey(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

float FromOrderedKey(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// Sorted distinct values with their total weights (floats: millions of them for a large tensor).
struct WeightedRuns {
  std::vector<float> value, weight;
};

WeightedRuns SortedRuns(const float* x, const float* weights, int64_t n) {
  std::vector<uint64_t> items(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    uint32_t w;
    const float wf = weights == nullptr ? 1.0f : weights[i];
    std::memcpy(&w, &wf, 4);
    items[i] = (static_cast<uint64_t>(OrderedKey(x[i])) << 32) | w;
  }
  SortByValue(&items);
  WeightedRuns runs;
  for (uint64_t item : items) {
    const float v = FromOrderedKey(static_cast<uint32_t>(item >> 32));
    float wf;
    const uint32_t wb = static_cast<uint32_t>(item);
    std::memcpy(&wf, &wb, 4);
    if (!runs.value.empty() && runs.value.back() == v) {
      runs.weight.back() += wf;
    } else {
      runs.value.push_back(v);
      runs.weight.push_back(wf);
    }
  }
  return runs;
}

// Prefix sums of w, w·x, w·x² over sorted runs, with x centred to keep the differences accurate.
struct PrefixSums {
  double center = 0;
  std::vector<double> w, wx, wxx;  // size n + 1

  explicit PrefixSums(const WeightedRuns& r) {
    const size_t n = r.value.size();
    double total = 0, sum = 0;
    for (size_t i = 0; i < n; ++i) total += r.weight[i], sum += r.weight[i] * r.value[i];
    center = total > 0 ? sum / total : 0;
    w.assign(n + 1, 0), wx.assign(n + 1, 0), wxx.assign(n + 1, 0);
    for (size_t i = 0; i < n; ++i) {
      const double v = r.value[i] - center;
      w[i + 1] = w[i] + r.weight[i];
      wx[i + 1] = wx[i] + r.weight[i] * v;
      wxx[i + 1] = wxx[i] + r.weight[i] * v * v;
    }
  }
  // Weighted squared error of runs [i, j) around their weighted mean; clamped at 0 against roundoff.
  double Cost(size_t i, size_t j) const {
    const double sw = w[j] - w[i];
    if (sw <= 0) return 0;
    const double sx = wx[j] - wx[i];
    return std::max(0.0, (wxx[j] - wxx[i]) - sx * sx / sw);
  }
  double Mean(size_t i, size_t j) const {
    const double sw = w[j] - w[i];
    return sw > 0 ? center + (wx[j] - wx[i]) / sw : std::numeric_limits<double>::quiet_NaN();
  }
};

// Optimal k-clustering of sorted runs by dynamic programming: cost[m][j] is the least error of the first
// j runs in m clusters; the optimal split is monotone in j, so each row is filled by divide and conquer.
std::vector<double> OptimalCentroids(const WeightedRuns& runs, int k) {
  const size_t n = runs.value.size();
  const PrefixSums sums(runs);
  std::vector<double> prev(n + 1, std::numeric_limits<double>::infinity()), cur(n + 1);
  std::vector<std::vector<uint32_t>> split(static_cast<size_t>(k), std::vector<uint32_t>(n + 1, 0));
  prev[0] = 0;
  for (int m = 0; m < k; ++m) {
    std::fill(cur.begin(), cur.end(), std::numeric_limits<double>::infinity());
    // Fill cur[j] for j in [lo, hi] knowing its best split lies in [opt_lo, opt_hi].
    auto solve = [&](auto&& self, size_t lo, size_t hi, size_t opt_lo, size_t opt_hi) -> void {
      if (lo > hi) return;
      const size_t j = (lo + hi) / 2;
      double best = std::numeric_limits<double>::infinity();
      size_t best_i = opt_lo;
      for (size_t i = opt_lo; i <= std::min(opt_hi, j - 1); ++i) {
        const double c = prev[i] + sums.Cost(i, j);
        if (c < best) best = c, best_i = i;
      }
      cur[j] = best;
      split[m][j] = static_cast<uint32_t>(best_i);
      if (j > lo) self(self, lo, j - 1, opt_lo, best_i);
      self(self, j + 1, hi, best_i, opt_hi);
    };
    solve(solve, static_cast<size_t>(m) + 1, n, static_cast<size_t>(m), n - 1);
    prev.swap(cur);
  }
  std::vector<double> centroids(static_cast<size_t>(k));
  size_t j = n;
  for (int m = k - 1; m >= 0; --m) {
    const size_t i = split[m][j];
    const double mean = sums.Mean(i, j);
    centroids[m] = std::isnan(mean) ? runs.value[i] : mean;  // a run of zero total weight
    j = i;
  }
  return centroids;
}

// Groups sorted runs into `bins` runs of about equal weight, each at its weighted mean.
WeightedRuns Compress(const WeightedRuns& runs, int64_t bins) {
  double total = 0;
  for (double w : runs.weight) total += w;
  WeightedRuns out;
  double acc = 0, sw = 0, swx = 0;
  int64_t next_cut = 1;
  for (size_t i = 0; i < runs.value.size(); ++i) {
    acc += runs.weight[i], sw += runs.weight[i], swx += runs.weight[i] * runs.value[i];
    if (acc >= total * static_cast<double>(next_cut) / static_cast<double>(bins) || i + 1 == runs.value.size()) {
      if (sw > 0) {
        out.value.push_back(static_cast<float>(swx / sw));
        out.weight.push_back(static_cast<float>(sw));
      }
      sw = swx = 0;
      while (next_cut < bins && acc >= total * static_cast<double>(next_cut) / static_cast<double>(bins)) ++next_cut;
    }
  }
  return out;
}

double SquaredDistance(const float* x, const float* w, const float* c, int d) {
  double s = 0;
  if (w == nullptr) {
    for (int j = 0; j < d; ++j) s += (static_cast<double>(x[j]) - c[j]) * (static_cast<double>(x[j]) - c[j]);
    return s;
  }
  for (int j = 0; j < d; ++j) s += w[j] * (static_cast<double>(x[j]) - c[j]) * (static_cast<double>(x[j]) - c[j]);
  return s;
}

}  // namespace

KMeansResult KMeans1D(const float* x, const float* weights, int64_t n, const KMeansOptions& options) {
  const int k = options.k;
  KMeansResult result;
  WeightedRuns runs = SortedRuns(x, weights, n);
  if (runs.value.empty()) {
    result.centroids.assign(static_cast<size_t>(k), 0.0f);
    return result;
  }
  if (static_cast<int64_t>(runs.value.size()) <= k) {
    for (double v : runs.value) result.centroids.push_back(static_cast<float>(v));
    result.centroids.resize(static_cast<size_t>(k), result.centroids.back());
    result.objective.push_back(0.0);
    return result;
  }
  const bool exact = static_cast<int64_t>(runs.value.size()) <= kMaxExactPoints;
  std::vector<double> c = OptimalCentroids(exact ? runs : Compress(runs, kMaxExactPoints), k);
  // Lloyd on the full sorted data: clusters are the runs between midpoints of consecutive centroids, so
  // one scan gives every cluster's error and mean (no per-point assignment is stored).
  for (int it = 0; it < (exact ? 1 : options.max_iterations); ++it) {
    double objective = 0;
    std::vector<double> next = c;
    size_t begin = 0;
    for (int j = 0; j < k; ++j) {
      const size_t end = j + 1 < k ? static_cast<size_t>(std::upper_bound(runs.value.begin(), runs.value.end(),
                                                                         static_cast<float>(0.5 * (c[j] + c[j + 1]))) -
                                                        runs.value.begin())
                                   : runs.value.size();
      double sw = 0, swd = 0, swdd = 0;  // around the current centroid
      for (size_t i = begin; i < std::max(begin, end); ++i) {
        const double diff = static_cast<double>(runs.value[i]) - c[j];
        sw += runs.weight[i], swd += runs.weight[i] * diff, swdd += runs.weight[i] * diff * diff;
      }
      objective += swdd;
      if (sw > 0) next[j] = c[j] + swd / sw;
      begin = std::max(begin, end);
    }
    result.objective.push_back(objective);
    if (next == c || (it > 0 && objective >= result.objective[it - 1] * (1 - 1e-9))) break;
    c.swap(next);
  }
  for (double v : c) result.centroids.push_back(static_cast<float>(v));
  std::sort(result.centroids.begin(), result.centroids.end());
  return result;
}

int NearestCentroid(const float* x, const float* w, const float* centroids, int k, int d, double* distance) {
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int c = 0; c < k; ++c) {
    const double dist = SquaredDistance(x, w, centroids + static_cast<size_t>(c) * d, d);
    if (dist < best_d) best_d = dist, best = c;
  }
  if (distance != nullptr) *distance = best_d;
  return best;
}

KMeansResult KMeans(const float* x_all, const float* w_all, int64_t n_all, int d, const KMeansOptions& options) {
  if (d == 1) return KMeans1D(x_all, w_all, n_all, options);
  const int k = options.k;
  std::mt19937_64 rng(options.seed);
  // Training subsample, drawn with the seed (a partial Fisher-Yates shuffle of the indices).
  std::vector<float> xs, ws;
  const float* x = x_all;
  const float* w = w_all;
  int64_t n = n_all;
  const int64_t cap = options.max_points_per_centroid * k;
  if (options.max_points_per_centroid > 0 && n_all > cap) {
    std::vector<int64_t> index(static_cast<size_t>(n_all));
    std::iota(index.begin(), index.end(), 0);
    for (int64_t i = 0; i < cap; ++i) {
      const int64_t j = i + static_cast<int64_t>(Uniform(rng) * static_cast<double>(n_all - i));
      std::swap(index[i], index[std::min(j, n_all - 1)]);
    }
    std::sort(index.begin(), index.begin() + cap);
    xs.resize(static_cast<size_t>(cap * d));
    if (w_all != nullptr) ws.resize(xs.size());
    for (int64_t i = 0; i < cap; ++i) {
      std::copy(x_all + index[i] * d, x_all + (index[i] + 1) * d, xs.begin() + i * d);
      if (w_all != nullptr) std::copy(w_all + index[i] * d, w_all + (index[i] + 1) * d, ws.begin() + i * d);
    }
    x = xs.data();
    w = w_all != nullptr ? ws.data() : nullptr;
    n = cap;
  }
  KMeansResult result;
  result.centroids.assign(static_cast<size_t>(k) * d, 0.0f);
  if (n == 0) return result;
  auto point_w = [&](int64_t i) { return w == nullptr ? nullptr : w + i * d; };
  // k-means++: each next centroid drawn with probability proportional to its squared distance.
  std::vector<double> dist(static_cast<size_t>(n), std::numeric_limits<double>::infinity());
  int64_t pick = std::min(n - 1, static_cast<int64_t>(Uniform(rng) * static_cast<double>(n)));
  for (int c = 0; c < k; ++c) {
    std::copy(x + pick * d, x + (pick + 1) * d, result.centroids.begin() + static_cast<size_t>(c) * d);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      dist[i] = std::min(dist[i], SquaredDistance(x + i * d, point_w(i), result.centroids.data() + static_cast<size_t>(c) * d, d));
      total += dist[i];
    }
    if (c + 1 == k) break;
    if (total <= 0) {  // fewer distinct points than centroids: repeat
      pick = 0;
      continue;
    }
    double target = Uniform(rng) * total;
    pick = n - 1;
    for (int64_t i = 0; i < n; ++i) {
      target -= dist[i];
      if (target < 0) {
        pick = i;
        break;
      }
    }
  }
  // Lloyd iterations.
  std::vector<int> assign(static_cast<size_t>(n), -1);
  std::vector<double> sum_wx(static_cast<size_t>(k) * d), sum_w(static_cast<size_t>(k) * d);
  for (int it = 0; it < options.max_iterations; ++it) {
    bool changed = false;
    double objective = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int a = NearestCentroid(x + i * d, point_w(i), result.centroids.data(), k, d, &dist[i]);
      objective += dist[i];
      changed = changed || a != assign[i];
      assign[i] = a;
    }
    result.objective.push_back(objective);
    if (!changed) break;
    std::fill(sum_wx.begin(), sum_wx.end(), 0.0);
    std::fill(sum_w.begin(), sum_w.end(), 0.0);
    std::vector<int64_t> members(static_cast<size_t>(k), 0);
    for (int64_t i = 0; i < n; ++i) {
      ++members[assign[i]];
      for (int j = 0; j < d; ++j) {
        const double wij = w == nullptr ? 1.0 : w[i * d + j];
        sum_w[assign[i] * d + j] += wij;
        sum_wx[assign[i] * d + j] += wij * x[i * d + j];
      }
    }
    for (int c = 0; c < k; ++c) {
      for (int j = 0; j < d; ++j) {
        if (sum_w[c * d + j] > 0) result.centroids[c * d + j] = static_cast<float>(sum_wx[c * d + j] / sum_w[c * d + j]);
      }
      if (members[c] == 0) {  // re-seed an empty cluster at the worst-served point
        const int64_t far = std::max_element(dist.begin(), dist.end()) - dist.begin();
        std::copy(x + far * d, x + (far + 1) * d, result.centroids.begin() + static_cast<size_t>(c) * d);
        dist[far] = 0;
      }
    }
  }
  return result;
}

}  // namespace lowbit
