// Status propagation macros (Debian's Abseil 20220623 has no absl/status/status_macros.h).
#ifndef LOWBIT_CORE_UTIL_STATUS_MACROS_H_
#define LOWBIT_CORE_UTIL_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define LOWBIT_CONCAT_INNER_(a, b) a##b
#define LOWBIT_CONCAT_(a, b) LOWBIT_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` yields a non-OK absl::Status.
#define RETURN_IF_ERROR(expr)                        \
  do {                                               \
    ::absl::Status lowbit_status_ = (expr);          \
    if (!lowbit_status_.ok()) return lowbit_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F())` binds the value of an absl::StatusOr or returns its error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  LOWBIT_ASSIGN_OR_RETURN_IMPL_(LOWBIT_CONCAT_(lowbit_statusor_, __LINE__), lhs, expr)

#define LOWBIT_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // LOWBIT_CORE_UTIL_STATUS_MACROS_H_
