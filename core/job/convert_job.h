// RunConvertJob: rewrites any readable checkpoint (e.g. llama2.c .bin) as a Hugging Face checkpoint:
// model.safetensors with HF names and layout, in the source dtypes, plus config.json. Streams one
// tensor at a time; the output appears whole or not at all. ALREADY_EXISTS for an occupied destination
// unless `overwrite`.
#ifndef LOWBIT_CORE_JOB_CONVERT_JOB_H_
#define LOWBIT_CORE_JOB_CONVERT_JOB_H_

#include <string>

#include "absl/status/status.h"
#include "core/storage/object_store.h"

namespace lowbit {

absl::Status RunConvertJob(ObjectStore* store, const std::string& source_uri, const std::string& destination_uri,
                           bool overwrite = false);

}  // namespace lowbit

#endif  // LOWBIT_CORE_JOB_CONVERT_JOB_H_
