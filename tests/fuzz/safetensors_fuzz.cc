// Bytes as a .safetensors file: the header parser and every tensor read.
#include "core/checkpoint/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& scratch = lowbit::fuzz::TheScratch();
  const std::string uri = scratch.Put("model.safetensors", data, size);
  auto reader = lowbit::OpenSafetensors(scratch.store(), uri);
  if (reader.ok()) lowbit::fuzz::Drain(reader->get());
  return 0;
}
