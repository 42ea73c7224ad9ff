// Subcommands that run in this process: quantize, convert, generate, eval, tokenize.
#ifndef LOWBIT_CLIENT_LOCAL_COMMANDS_H_
#define LOWBIT_CLIENT_LOCAL_COMMANDS_H_

#include "absl/status/status.h"

namespace lowbit::cli {

absl::Status RunQuantizeCommand();
absl::Status RunConvertCommand();
absl::Status RunGenerateCommand();
absl::Status RunEvalCommand();
absl::Status RunTokenizeCommand();

}  // namespace lowbit::cli

#endif  // LOWBIT_CLIENT_LOCAL_COMMANDS_H_
