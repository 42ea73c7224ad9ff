// Subcommands that talk to lowbitd: submit, get, list, watch, cancel.
#ifndef LOWBIT_CLIENT_REMOTE_COMMANDS_H_
#define LOWBIT_CLIENT_REMOTE_COMMANDS_H_

#include <string>

#include "absl/status/status.h"

namespace lowbit::cli {

absl::Status RunSubmitCommand();
absl::Status RunGetCommand(const std::string& name);
absl::Status RunListCommand();
// FAILED_PRECONDITION (non-zero exit) when the watched job ends FAILED or CANCELLED.
absl::Status RunWatchCommand(const std::string& name);
absl::Status RunCancelCommand(const std::string& name);
absl::Status RunDeleteCommand(const std::string& name);

}  // namespace lowbit::cli

#endif  // LOWBIT_CLIENT_REMOTE_COMMANDS_H_
