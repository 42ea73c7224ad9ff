// Weighted k-means for palettization and vector quantization.
//
// Points are n vectors of dimension d (row-major, n * d floats) with an optional non-negative weight per
// component (n * d), so the objective is Σ_i Σ_j w_ij (x_ij − c_{a(i) j})² — per-component weights carry
// Hessian importance (sensitive k-means, GPTVQ's weighted EM).
//
// Two solvers:
//  - KMeans1D: exact for d = 1. Sorted points make every optimal cluster a contiguous run, so dynamic
//    programming over the sorted distinct values finds the global optimum (Ckmeans.1d.dp, with the
//    divide-and-conquer split rule). Above kMaxExactPoints distinct values the DP runs on that many
//    equal-weight runs of the sorted data, and Lloyd iterations on the full sorted data (each one
//    O(k log n) through prefix sums) finish the job.
//  - KMeans: Lloyd's algorithm with k-means++ seeding (deterministic for a seed), trained on at most
//    max_points_per_centroid * k points sampled with the seed, as Faiss does. Empty clusters are re-seeded
//    at the point farthest from its centroid. The objective never increases from one iteration to the next.
//
// Neither checks for NaN/Inf: callers scan their weights on entry.
#ifndef LOWBIT_CORE_QUANT_KMEANS_H_
#define LOWBIT_CORE_QUANT_KMEANS_H_

#include <cstdint>
#include <vector>

namespace lowbit {

struct KMeansOptions {
  int k = 16;                          ///< centroids
  int max_iterations = 50;             ///< Lloyd iterations
  uint32_t seed = 0;                   ///< k-means++ seeding and training subsample
  int64_t max_points_per_centroid = 256;  ///< training subsample (vector k-means); 0 = all points
};

struct KMeansResult {
  std::vector<float> centroids;   ///< k * d; for KMeans1D sorted ascending
  std::vector<double> objective;  ///< weighted squared error after each iteration, on the training points
};

// Exact (or, above kMaxExactPoints distinct values, DP-seeded Lloyd) weighted 1-D k-means. `weights` may be
// null (all 1). When there are fewer distinct values than k, the extra centroids repeat the largest value.
KMeansResult KMeans1D(const float* x, const float* weights, int64_t n, const KMeansOptions& options);

// Weighted k-means of n points of dimension d; `weights` may be null (all 1). d = 1 is KMeans1D.
KMeansResult KMeans(const float* x, const float* weights, int64_t n, int d, const KMeansOptions& options);

// Index of the centroid nearest to `x` under per-component weights `w` (null: all 1); its weighted squared
// distance goes to `distance` if not null.
int NearestCentroid(const float* x, const float* w, const float* centroids, int k, int d, double* distance = nullptr);

// Nearest of k sorted 1-D centroids (ties go to the lower one).
inline int NearestSorted(float x, const float* sorted, int k) {
  int lo = 0, hi = k - 1;
  while (lo < hi) {  // the first centroid whose midpoint with its successor is >= x
    const int mid = (lo + hi) / 2;
    if (x <= 0.5f * (sorted[mid] + sorted[mid + 1])) hi = mid; else lo = mid + 1;
  }
  return lo;
}

// Distinct values above which KMeans1D compresses the sorted data before the DP.
inline constexpr int64_t kMaxExactPoints = 4096;

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_KMEANS_H_
