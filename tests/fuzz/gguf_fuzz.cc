// Bytes as a GGUF file: the header, the metadata, and every tensor dequantized.
#include "core/checkpoint/gguf.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& scratch = lowbit::fuzz::TheScratch();
  const std::string uri = scratch.Put("model.gguf", data, size);
  lowbit::ReadGgufHeader(scratch.store(), uri).IgnoreError();
  auto reader = lowbit::OpenGguf(scratch.store(), uri);
  if (reader.ok()) lowbit::fuzz::Drain(reader->get());
  return 0;
}
