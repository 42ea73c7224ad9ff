// Bytes as tokenizer files: the first byte picks tokenizer.json (Hugging Face) or tokenizer.bin (llama2.c),
// the rest is the file; a loaded tokenizer encodes and decodes a fixed text.
#include "core/runtime/tokenizer.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  auto& scratch = lowbit::fuzz::TheScratch();
  const std::string name = data[0] % 2 == 0 ? "tokenizer.json" : "tokenizer.bin";
  const std::string uri = scratch.Put(name, data + 1, size - 1);
  auto tokenizer = lowbit::LoadTokenizer(scratch.store(), uri, 512);
  if (tokenizer.ok()) {
    const std::vector<int> ids = (*tokenizer)->Encode("Once upon a time, héllo 世界 \n\t  123");
    (*tokenizer)->Decode(ids);
  }
  return 0;
}
