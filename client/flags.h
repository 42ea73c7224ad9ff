// Command-line flags of `lowbit`, shared by its subcommands. Flags are spelled with dashes on the
// command line (--group-size); NormalizeFlagNames maps them to Abseil's underscore names.
#ifndef LOWBIT_CLIENT_FLAGS_H_
#define LOWBIT_CLIENT_FLAGS_H_

#include <string>
#include <vector>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "core/job/quantize_job.h"
#include "lowbit/v1/quantizer.pb.h"

ABSL_DECLARE_FLAG(std::string, input);
ABSL_DECLARE_FLAG(std::string, output);
ABSL_DECLARE_FLAG(std::string, method);
ABSL_DECLARE_FLAG(int, bits);
ABSL_DECLARE_FLAG(int, group_size);
ABSL_DECLARE_FLAG(bool, sym);
ABSL_DECLARE_FLAG(bool, mse_clip);
ABSL_DECLARE_FLAG(bool, quantize_lm_head);
ABSL_DECLARE_FLAG(std::vector<std::string>, include);
ABSL_DECLARE_FLAG(std::vector<std::string>, exclude);
ABSL_DECLARE_FLAG(bool, overwrite);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(int, threads);
ABSL_DECLARE_FLAG(std::string, s3_endpoint);
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, tokenizer);
ABSL_DECLARE_FLAG(bool, jsonl);
ABSL_DECLARE_FLAG(std::vector<std::string>, override);
ABSL_DECLARE_FLAG(int, vocab_size);
ABSL_DECLARE_FLAG(int, steps);
ABSL_DECLARE_FLAG(std::string, reference);
ABSL_DECLARE_FLAG(std::string, text);
ABSL_DECLARE_FLAG(std::string, request_id);
ABSL_DECLARE_FLAG(std::string, distributions);
ABSL_DECLARE_FLAG(int, eval_windows);
ABSL_DECLARE_FLAG(int, eval_seqlen);
ABSL_DECLARE_FLAG(std::string, s3_region);
ABSL_DECLARE_FLAG(std::string, memory_limit);
ABSL_DECLARE_FLAG(bool, dry_run);
ABSL_DECLARE_FLAG(std::vector<std::string>, candidates);
ABSL_DECLARE_FLAG(std::string, measurement);
ABSL_DECLARE_FLAG(int, sensitivity_windows);
ABSL_DECLARE_FLAG(std::string, calib);
ABSL_DECLARE_FLAG(int, calib_samples);
ABSL_DECLARE_FLAG(int, calib_seqlen);
ABSL_DECLARE_FLAG(int, calib_seed);
ABSL_DECLARE_FLAG(std::string, format);

namespace lowbit::cli {

// Rewrites "--group-size=4" as "--group_size=4" in place (values are left alone).
void NormalizeFlagNames(int argc, char** argv);
// Whether --NAME (or --noNAME) was on the command line NormalizeFlagNames saw.
bool FlagGiven(const std::string& name);

// The QuantizeModelRequest the flags describe (--input and --output as given), for lowbitd and, through
// the same JobSpecFromRequest as lowbitd's, for the local quantize command.
absl::StatusOr<v1::QuantizeModelRequest> RequestFromFlags();

}  // namespace lowbit::cli

#endif  // LOWBIT_CLIENT_FLAGS_H_
