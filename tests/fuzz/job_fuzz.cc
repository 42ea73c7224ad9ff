// Bytes as a whole checkpoint (a .safetensors file beside a fixed Llama config.json) run as an rtn job in
// memory-bounded streaming, its output written to the scratch directory: parser, planner, quantizer and
// writer together.
#include "core/job/quantize_job.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& scratch = lowbit::fuzz::TheScratch();
  scratch.Clear();
  scratch.Put("m/config.json", R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
    "num_hidden_layers": 1, "vocab_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
    "intermediate_size": 16, "rms_norm_eps": 1e-5, "tie_word_embeddings": false})");
  scratch.Put("m/model.safetensors", data, size);
  lowbit::QuantizeJobSpec spec;
  spec.source_uri = "m";
  spec.destination_uri = "out";
  spec.quant = {lowbit::Method::kRtn, 4, 8, false, false};
  lowbit::JobOptions options;
  options.memory_limit_bytes = 256u << 20;  // a forged header may declare any shape; the plan refuses it
  lowbit::RunQuantizeJob(spec, scratch.store(), scratch.store(), options).IgnoreError();
  return 0;
}
