// Bytes as a llama2.c checkpoint (.bin): its header, the shapes it implies and every tensor read.
#include "core/checkpoint/llama2c.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& scratch = lowbit::fuzz::TheScratch();
  const std::string uri = scratch.Put("model.bin", data, size);
  auto reader = lowbit::OpenLlama2c(scratch.store(), uri);
  if (reader.ok()) lowbit::fuzz::Drain(reader->get());
  return 0;
}
