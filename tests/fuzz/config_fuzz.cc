// Bytes as config.json: the model descriptor, and the architecture checks a job makes of it.
#include "core/checkpoint/architecture.h"
#include "core/checkpoint/model_descriptor.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto descriptor = lowbit::ModelDescriptor::FromConfigJson(text);
  if (descriptor.ok()) {
    if (const lowbit::Architecture* arch = lowbit::FindArchitecture(descriptor->architecture)) {
      (void)arch;
    }
  }
  return 0;
}
