// The exit codes of the lowbit CLI, for scripts and for a Kubernetes Job's podFailurePolicy
// (deploy/batch/job.yaml): a permanent error fails the Job at once, a retryable one is retried.
//
//   0   done
//   1   unexpected (INTERNAL, UNKNOWN): retried
//   2   the command line is wrong
//   3   permanent: the input or the request is wrong (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
//       FAILED_PRECONDITION, DATA_LOSS, UNIMPLEMENTED, OUT_OF_RANGE) or access is refused
//       (PERMISSION_DENIED, UNAUTHENTICATED)
//   4   permanent at this size: the job's plan exceeds the memory limit (RESOURCE_EXHAUSTED)
//   75  retryable: the infrastructure failed (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, CANCELLED);
//       EX_TEMPFAIL of sysexits.h
#ifndef LOWBIT_CLIENT_EXIT_CODE_H_
#define LOWBIT_CLIENT_EXIT_CODE_H_

#include "absl/status/status.h"

namespace lowbit::cli {

inline constexpr int kExitUsage = 2;

int ExitCode(const absl::Status& status);
// Whether a retry of the same command may succeed (exit codes 1 and 75).
bool IsRetryable(const absl::Status& status);

}  // namespace lowbit::cli

#endif  // LOWBIT_CLIENT_EXIT_CODE_H_
