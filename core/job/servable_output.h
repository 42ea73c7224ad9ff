// What makes an output directory servable beside its weights and config: the source checkpoint's tokenizer
// and generation files, copied unchanged, and a model card (README.md) saying what the model is and how
// each engine serves it.
#ifndef LOWBIT_CORE_JOB_SERVABLE_OUTPUT_H_
#define LOWBIT_CORE_JOB_SERVABLE_OUTPUT_H_

#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "core/job/output_transaction.h"
#include "core/job/quantize_job.h"
#include "core/job/report.h"
#include "core/storage/object_store.h"

namespace lowbit {

// The files of a Hugging Face checkpoint that engines read besides weights and config.json.
inline constexpr const char* kServingFiles[] = {
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json",     "merges.txt",      "generation_config.json", "chat_template.jinja",   "chat_template.json",
};

// Copies those of kServingFiles that sit beside the checkpoint at `spec.source_uri`, and an explicitly
// given llama2.c tokenizer as tokenizer.bin (so lowbit finds it beside the output). A missing file is
// skipped; any other read error fails the job.
absl::Status CopyServingFiles(ObjectStore* source, const QuantizeJobSpec& spec, OutputTransaction* output,
                              JobReport* report);

// README.md: the source, method and parameters, bits per weight, layers kept in high precision, the
// evaluation when one ran, and the command each engine serves the directory with. Deterministic: the
// same job writes the same card.
std::string ModelCard(const QuantizeJobSpec& spec, const JobReport& report, const nlohmann::json& quantization_config);

}  // namespace lowbit

#endif  // LOWBIT_CORE_JOB_SERVABLE_OUTPUT_H_
