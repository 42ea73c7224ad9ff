// Subcommands that run a job in this process: `lowbit quantize` and `lowbit convert`.
#ifndef LOWBIT_CLIENT_LOCAL_COMMANDS_H_
#define LOWBIT_CLIENT_LOCAL_COMMANDS_H_

#include "absl/status/status.h"

namespace lowbit::cli {

absl::Status RunQuantizeCommand();
absl::Status RunConvertCommand();
absl::Status RunGenerateCommand();
absl::Status RunEvalCommand();

}  // namespace lowbit::cli

#endif  // LOWBIT_CLIENT_LOCAL_COMMANDS_H_
