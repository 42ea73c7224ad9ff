// Bit allocation: one quantization setting per layer, chosen to minimise the predicted loss of the whole
// model under a size budget. A multiple-choice knapsack: layer i offers candidates (bits_ij, cost_ij), one
// per setting (method x bits x group size x format) with the exact bits its packed tensors take and the
// loss its error is predicted to add; the allocation picks one per layer with sum bits <= budget and the
// least sum of costs.
//
// Solved exactly by dynamic programming over the Pareto frontier of partial (bits, cost) sums while the
// frontier stays below a bound (always on small instances); beyond it by Lagrangian relaxation (each
// layer's choice for a price per bit, the price bisected to the budget) and a greedy spend of what is left.
// Either way the result carries the Lagrangian dual bound, a lower bound on the best achievable cost at
// that budget, so a report can say how far from optimal the choice is at most.
#ifndef LOWBIT_CORE_QUANT_BIT_ALLOCATION_H_
#define LOWBIT_CORE_QUANT_BIT_ALLOCATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace lowbit {

struct AllocationCandidate {
  uint64_t bits = 0;  ///< every stored bit of the layer with this setting (codes, scales, zeros, indices)
  double cost = 0;    ///< the predicted loss it adds (e.g. its share of the model's KL); >= 0
};

struct Allocation {
  std::vector<int> choice;  ///< per layer, the index of its candidate
  uint64_t bits = 0;
  double cost = 0;
  double lower_bound = 0;  ///< no choice within the budget costs less than this
  bool exact = false;      ///< found by the exact search: cost is the optimum
};

struct AllocationOptions {
  size_t max_frontier = 200'000;  ///< exact search while the partial frontier has at most this many points
};

// INVALID_ARGUMENT for a layer without candidates or a negative cost; OUT_OF_RANGE when even the
// smallest candidates exceed `budget_bits` (the message gives that minimum).
absl::StatusOr<Allocation> AllocateBits(const std::vector<std::vector<AllocationCandidate>>& layers,
                                        uint64_t budget_bits, const AllocationOptions& options = {});

}  // namespace lowbit

#endif  // LOWBIT_CORE_QUANT_BIT_ALLOCATION_H_
