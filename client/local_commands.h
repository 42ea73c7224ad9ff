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
// Measures a model's candidates and prints the predicted KL of the best allocation at each budget.
absl::Status RunPlanCommand();

}  // namespace lowbit::cli

#endif  // LOWBIT_CLIENT_LOCAL_COMMANDS_H_
