// lowbit: the command-line client. Local jobs (quantize, convert) run in this process with the same
// core/job code the server runs.
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "client/exit_code.h"
#include "client/flags.h"
#include "client/local_commands.h"
#include "client/remote_commands.h"
#include "core/util/memory.h"

namespace {

constexpr char kUsage[] = R"(lowbit: quantize LLM checkpoints.

  lowbit quantize --input PATH --output DIR [--method rtn|int8] [--bits N] [--group-size N] [--sym] [--json]
  lowbit quantize --input PATH --output DIR --target-bpw 4.5 --calib TEXT   (each layer's setting chosen under a budget)
  lowbit plan     --input PATH --calib TEXT [--budgets 3,4,5] [--json] [--plot FILE.png]   (predicted quality vs size)
  lowbit convert  --input MODEL.bin --output DIR      (llama2.c -> Hugging Face safetensors)
  lowbit generate --model MODEL [--tokenizer FILE] [--steps N]   (greedy decoding from BOS)
  lowbit eval     --model MODEL [--reference MODEL] --text TEXT [--tokenizer FILE]   (perplexity, KL)
  lowbit tokenize --tokenizer FILE --text FILE [--json] [--jsonl]   (the ids a text becomes)
  (a tokenizer is tokenizer.json or llama2.c's .bin; by default the one beside the model))

  lowbit submit   --input URI --output URI [method flags as for quantize] [--request-id ID] [--watch]
  lowbit get      JOB            lowbit watch JOB            lowbit cancel JOB
  lowbit list     [--state RUNNING] [--filter 'labels.team = "nlp"']
  lowbit delete   JOB [--outputs]   (a finished job's record; with --outputs its committed files too)
  (remote commands take --server HOST:PORT, default localhost:50051, and --json)

Run `lowbit --help` for every flag.)";

}  // namespace

int main(int argc, char** argv) {
  lowbit::ConfigureAllocatorForLargeBuffers();
  absl::SetProgramUsageMessage(kUsage);
  lowbit::cli::NormalizeFlagNames(argc, argv);
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  if (args.size() < 2) {
    std::fprintf(stderr, "%s\n", kUsage);
    return lowbit::cli::kExitUsage;
  }
  const std::string command = args[1];
  const bool takes_job = command == "get" || command == "watch" || command == "cancel" || command == "delete";
  if (args.size() != (takes_job ? 3u : 2u)) {
    std::fprintf(stderr, "lowbit %s: %s\n\n%s\n", command.c_str(),
                 takes_job ? "expects one job name" : "takes no positional arguments", kUsage);
    return lowbit::cli::kExitUsage;
  }
  absl::Status status;
  if (command == "quantize") {
    status = lowbit::cli::RunQuantizeCommand();
  } else if (command == "convert") {
    status = lowbit::cli::RunConvertCommand();
  } else if (command == "plan") {
    status = lowbit::cli::RunPlanCommand();
  } else if (command == "eval") {
    status = lowbit::cli::RunEvalCommand();
  } else if (command == "tokenize") {
    status = lowbit::cli::RunTokenizeCommand();
  } else if (command == "generate") {
    status = lowbit::cli::RunGenerateCommand();
  } else if (command == "submit") {
    status = lowbit::cli::RunSubmitCommand();
  } else if (command == "list") {
    status = lowbit::cli::RunListCommand();
  } else if (command == "get") {
    status = lowbit::cli::RunGetCommand(args[2]);
  } else if (command == "watch") {
    status = lowbit::cli::RunWatchCommand(args[2]);
  } else if (command == "cancel") {
    status = lowbit::cli::RunCancelCommand(args[2]);
  } else if (command == "delete") {
    status = lowbit::cli::RunDeleteCommand(args[2]);
  } else {
    std::fprintf(stderr, "unknown command '%s'\n\n%s\n", command.c_str(), kUsage);
    return lowbit::cli::kExitUsage;
  }
  if (!status.ok()) {
    // Code and message; the payloads (field violations, reasons) are for RPC clients.
    std::fprintf(stderr, "lowbit %s: %s: %s\n", command.c_str(), absl::StatusCodeToString(status.code()).c_str(),
                 std::string(status.message()).c_str());
    return lowbit::cli::ExitCode(status);  // client/exit_code.h: permanent and retryable errors apart
  }
  return 0;
}
