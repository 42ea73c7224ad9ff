// Bytes as model.safetensors.index.json beside two small valid shards and a config.json.
#include "core/checkpoint/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

void WriteShards(lowbit::fuzz::Scratch& scratch) {
  for (const char* shard : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}) {
    std::vector<lowbit::Tensor> tensors;
    const std::string name = std::string(shard).find("00001") != std::string::npos ? "model.embed_tokens.weight" : "lm_head.weight";
    lowbit::Tensor t{name, lowbit::DType::kF32, {4, 2}, std::string(32, '\0')};
    tensors.push_back(std::move(t));
    lowbit::WriteSafetensors(scratch.store(), std::string("m/") + shard, tensors).IgnoreError();
  }
  scratch.Put("m/config.json", R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2,
    "num_hidden_layers": 0, "vocab_size": 4, "num_attention_heads": 1, "intermediate_size": 4})");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& scratch = lowbit::fuzz::TheScratch();
  static const bool shards = (WriteShards(scratch), true);
  (void)shards;
  scratch.Put("m/model.safetensors.index.json", data, size);
  auto reader = lowbit::OpenCheckpoint(scratch.store(), "m");
  if (reader.ok()) lowbit::fuzz::Drain(reader->get());
  return 0;
}
