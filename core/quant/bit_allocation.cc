#include "core/quant/bit_allocation.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"

namespace lowbit {
namespace {

using Layers = std::vector<std::vector<AllocationCandidate>>;

// One point of a partial frontier: the first i layers' choices summing to (bits, cost); `from` is the
// point of layer i-1's frontier it extends, `candidate` layer i's choice.
struct Point {
  uint64_t bits;
  double cost;
  int from;
  int candidate;
};

// The exact optimum, or false when a partial frontier outgrows `max_frontier`.
bool SolveExactly(const Layers& layers, uint64_t budget, size_t max_frontier, Allocation* out) {
  // The fewest bits the layers after each one need: a partial sum beyond budget minus that is dead.
  std::vector<uint64_t> rest_min(layers.size() + 1, 0);
  for (size_t i = layers.size(); i-- > 0;) {
    uint64_t least = std::numeric_limits<uint64_t>::max();
    for (const AllocationCandidate& c : layers[i]) least = std::min(least, c.bits);
    rest_min[i] = rest_min[i + 1] + least;
  }
  std::vector<std::vector<Point>> frontiers(layers.size());
  std::vector<Point> previous = {{0, 0, -1, -1}};
  for (size_t i = 0; i < layers.size(); ++i) {
    std::vector<Point> next;
    next.reserve(previous.size() * layers[i].size());
    for (size_t p = 0; p < previous.size(); ++p) {
      for (size_t j = 0; j < layers[i].size(); ++j) {
        const uint64_t bits = previous[p].bits + layers[i][j].bits;
        if (bits > budget || budget - bits < rest_min[i + 1]) continue;
        next.push_back({bits, previous[p].cost + layers[i][j].cost, static_cast<int>(p), static_cast<int>(j)});
      }
    }
    // Keep the Pareto frontier: by bits, each point cheaper than every point with fewer bits.
    std::sort(next.begin(), next.end(),
              [](const Point& a, const Point& b) { return a.bits != b.bits ? a.bits < b.bits : a.cost < b.cost; });
    std::vector<Point> frontier;
    for (const Point& q : next) {
      if (frontier.empty() || q.cost < frontier.back().cost) frontier.push_back(q);
    }
    if (frontier.size() > max_frontier) return false;
    frontiers[i] = frontier;
    previous = std::move(frontier);
  }
  // The cheapest point of the last frontier is its last one (costs fall as bits rise).
  int at = static_cast<int>(previous.size()) - 1;
  out->choice.assign(layers.size(), 0);
  out->bits = previous[at].bits;
  out->cost = previous[at].cost;
  for (size_t i = layers.size(); i-- > 0;) {
    out->choice[i] = frontiers[i][at].candidate;
    at = frontiers[i][at].from;
  }
  out->lower_bound = out->cost;
  out->exact = true;
  return true;
}

// Each layer's best candidate at `price` per bit (ties: fewer bits); their bits and cost.
struct Priced {
  std::vector<int> choice;
  uint64_t bits = 0;
  double cost = 0;
  double priced = 0;  ///< sum of cost + price * bits
};

Priced AtPrice(const Layers& layers, double price) {
  Priced r;
  r.choice.resize(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    int best = 0;
    for (size_t j = 1; j < layers[i].size(); ++j) {
      const AllocationCandidate &c = layers[i][j], &b = layers[i][best];
      const double vc = c.cost + price * static_cast<double>(c.bits), vb = b.cost + price * static_cast<double>(b.bits);
      if (vc < vb || (vc == vb && c.bits < b.bits)) best = static_cast<int>(j);
    }
    r.choice[i] = best;
    r.bits += layers[i][best].bits;
    r.cost += layers[i][best].cost;
    r.priced += layers[i][best].cost + price * static_cast<double>(layers[i][best].bits);
  }
  return r;
}

void SolveByPrice(const Layers& layers, uint64_t budget, Allocation* out) {
  const double b = static_cast<double>(budget);
  Priced fits = AtPrice(layers, 0);
  double lower_bound = fits.priced;  // g(0): the least cost with no budget at all
  if (fits.bits > budget) {
    // A price at which one more bit is never worth any cost: every layer takes its smallest candidate.
    double high = 1;
    for (const auto& layer : layers) {
      for (const AllocationCandidate& c : layer) high += c.cost;
    }
    double low = high * 1e-30;
    if (AtPrice(layers, low).bits <= budget) high = low;  // fits almost free of charge
    for (int i = 0; i < 200 && low < high; ++i) {  // geometric bisection: prices span many decades
      const double mid = std::sqrt(low * high);
      Priced at = AtPrice(layers, mid);
      // g(price) = sum of min(cost + price * bits) - price * budget is a lower bound at every price.
      lower_bound = std::max(lower_bound, at.priced - mid * b);
      if (at.bits <= budget) {
        high = mid;
      } else {
        low = mid;
      }
    }
    fits = AtPrice(layers, high);
    lower_bound = std::max(lower_bound, fits.priced - high * b);
    lower_bound = std::max(lower_bound, AtPrice(layers, low).priced - low * b);
  }
  // Spend what the price left on the upgrades that save the most cost per bit.
  std::vector<int> choice = fits.choice;
  uint64_t bits = fits.bits;
  double cost = fits.cost;
  for (;;) {
    int best_layer = -1, best_candidate = -1;
    double best_rate = 0;
    for (size_t i = 0; i < layers.size(); ++i) {
      const AllocationCandidate& now = layers[i][choice[i]];
      for (size_t j = 0; j < layers[i].size(); ++j) {
        const AllocationCandidate& c = layers[i][j];
        if (c.cost >= now.cost || (c.bits > now.bits && c.bits - now.bits > budget - bits)) continue;
        const double extra = c.bits > now.bits ? static_cast<double>(c.bits - now.bits) : 0.5;  // free: first
        const double rate = (now.cost - c.cost) / extra;
        if (rate > best_rate) {
          best_rate = rate;
          best_layer = static_cast<int>(i);
          best_candidate = static_cast<int>(j);
        }
      }
    }
    if (best_layer < 0) break;
    const AllocationCandidate &from = layers[best_layer][choice[best_layer]], &to = layers[best_layer][best_candidate];
    bits = bits - from.bits + to.bits;
    cost += to.cost - from.cost;
    choice[best_layer] = best_candidate;
  }
  out->choice = std::move(choice);
  out->bits = bits;
  out->cost = cost;
  out->lower_bound = std::min(lower_bound, cost);
  out->exact = false;
}

}  // namespace

absl::StatusOr<Allocation> AllocateBits(const Layers& layers, uint64_t budget_bits, const AllocationOptions& options) {
  uint64_t least = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (layers[i].empty()) return absl::InvalidArgumentError(absl::StrCat("layer ", i, " has no candidate setting"));
    uint64_t smallest = std::numeric_limits<uint64_t>::max();
    for (const AllocationCandidate& c : layers[i]) {
      if (!(c.cost >= 0) || !std::isfinite(c.cost)) {
        return absl::InvalidArgumentError(absl::StrCat("layer ", i, ": a candidate's cost is ", c.cost));
      }
      smallest = std::min(smallest, c.bits);
    }
    least += smallest;
  }
  if (least > budget_bits) {
    return absl::OutOfRangeError(absl::StrCat("the budget of ", budget_bits, " bits is below the ", least,
                                              " bits of the smallest setting of every layer"));
  }
  Allocation allocation;
  if (!SolveExactly(layers, budget_bits, options.max_frontier, &allocation)) SolveByPrice(layers, budget_bits, &allocation);
  return allocation;
}

}  // namespace lowbit
