#include "core/checkpoint/llama2c.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

class Llama2cReader final : public CheckpointReader {
 public:
  Llama2cReader(ObjectStore* store, const Llama2cHeader& header, std::vector<TensorInfo> tensors,
                ModelDescriptor descriptor)
      : CheckpointReader(store), header_(header) {
    tensors_ = std::move(tensors);
    descriptor_ = std::move(descriptor);
  }

  absl::StatusOr<Tensor> Read(const TensorInfo& info) const override {
    ASSIGN_OR_RETURN(Tensor tensor, CheckpointReader::Read(info));
    const int64_t head_dim = header_.dim / header_.n_heads;
    int64_t heads = 0;
    if (info.name.ends_with("self_attn.q_proj.weight")) heads = header_.n_heads;
    if (info.name.ends_with("self_attn.k_proj.weight")) heads = header_.n_kv_heads;
    if (heads > 0) PermuteRotaryRowsToHf(heads, head_dim, header_.dim, sizeof(float),
                                         reinterpret_cast<uint8_t*>(tensor.bytes.data()));
    return tensor;
  }

 private:
  const Llama2cHeader header_;
};

nlohmann::json HfConfig(const Llama2cHeader& h) {
  return {
      {"architectures", {"LlamaForCausalLM"}},
      {"model_type", "llama"},
      {"hidden_size", h.dim},
      {"intermediate_size", h.hidden_dim},
      {"num_hidden_layers", h.n_layers},
      {"num_attention_heads", h.n_heads},
      {"num_key_value_heads", h.n_kv_heads},
      {"vocab_size", h.vocab_size},
      {"max_position_embeddings", h.seq_len},
      {"rms_norm_eps", 1e-5},
      {"rope_theta", 10000.0},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", h.shared_classifier},
      {"torch_dtype", "float32"},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
  };
}

}  // namespace

void PermuteRotaryRowsToHf(int64_t n_heads, int64_t head_dim, int64_t cols, size_t elem_size, uint8_t* data) {
  const size_t row_bytes = static_cast<size_t>(cols) * elem_size;
  const int64_t half = head_dim / 2;
  std::vector<uint8_t> head(static_cast<size_t>(head_dim) * row_bytes);
  for (int64_t h = 0; h < n_heads; ++h) {
    uint8_t* base = data + static_cast<size_t>(h * head_dim) * row_bytes;
    std::memcpy(head.data(), base, head.size());
    // HF row t*half + i comes from Meta row 2*i + t (t = 0: real part, t = 1: imaginary part).
    for (int64_t t = 0; t < 2; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        std::memcpy(base + static_cast<size_t>(t * half + i) * row_bytes,
                    head.data() + static_cast<size_t>(2 * i + t) * row_bytes, row_bytes);
      }
    }
  }
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenLlama2c(ObjectStore* store, absl::string_view uri) {
  ASSIGN_OR_RETURN(ObjectInfo object, store->Stat(uri));
  constexpr uint64_t kHeaderBytes = 7 * sizeof(int32_t);
  if (object.size < kHeaderBytes) {
    return absl::DataLossError(absl::StrCat("corrupt llama2.c file ", uri, ": ", object.size, " bytes, shorter than its header"));
  }
  ASSIGN_OR_RETURN(std::string raw, store->ReadRange(uri, 0, kHeaderBytes));
  int32_t fields[7];
  std::memcpy(fields, raw.data(), sizeof fields);
  Llama2cHeader h{fields[0], fields[1], fields[2], fields[3], fields[4], fields[5], fields[6], true};
  if (h.vocab_size < 0 && h.vocab_size != INT32_MIN) {  // INT32_MIN has no negation (found by llama2c_fuzz)
    h.shared_classifier = false;
    h.vocab_size = -h.vocab_size;
  }
  if (h.dim <= 0 || h.hidden_dim <= 0 || h.n_layers <= 0 || h.n_heads <= 0 || h.n_kv_heads <= 0 ||
      h.vocab_size <= 0 || h.seq_len <= 0 || h.dim % h.n_heads != 0 || h.n_heads % h.n_kv_heads != 0 ||
      (h.dim / h.n_heads) % 2 != 0 || h.dim > (1 << 16) || h.hidden_dim > (1 << 18) || h.n_layers > 1024 ||
      h.vocab_size > (1 << 22)) {
    return absl::DataLossError(absl::StrCat("corrupt llama2.c file ", uri, ": implausible header (dim ", h.dim,
                                            ", hidden ", h.hidden_dim, ", layers ", h.n_layers, ", heads ", h.n_heads,
                                            "/", h.n_kv_heads, ", vocab ", h.vocab_size, ", seq_len ", h.seq_len, ")"));
  }
  const int64_t dim = h.dim, hidden = h.hidden_dim, layers = h.n_layers, vocab = h.vocab_size;
  const int64_t head_dim = dim / h.n_heads, kv_dim = head_dim * h.n_kv_heads;

  // The file stores each kind of weight for all layers together, in this order.
  struct Kind {
    const char* hf_suffix;  // nullptr: not a per-layer tensor
    std::vector<int64_t> shape;
  };
  std::vector<TensorInfo> tensors;
  uint64_t offset = kHeaderBytes;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    const uint64_t size = static_cast<uint64_t>(NumElements(shape)) * sizeof(float);
    tensors.push_back({std::move(name), DType::kF32, std::move(shape), std::string(uri), offset, size});
    offset += size;
  };
  auto add_per_layer = [&](const char* suffix, std::vector<int64_t> shape) {
    for (int64_t l = 0; l < layers; ++l) add(absl::StrCat("model.layers.", l, ".", suffix), shape);
  };
  add("model.embed_tokens.weight", {vocab, dim});
  add_per_layer("input_layernorm.weight", {dim});
  add_per_layer("self_attn.q_proj.weight", {dim, dim});
  add_per_layer("self_attn.k_proj.weight", {kv_dim, dim});
  add_per_layer("self_attn.v_proj.weight", {kv_dim, dim});
  add_per_layer("self_attn.o_proj.weight", {dim, dim});
  add_per_layer("post_attention_layernorm.weight", {dim});
  add_per_layer("mlp.gate_proj.weight", {hidden, dim});
  add_per_layer("mlp.down_proj.weight", {dim, hidden});
  add_per_layer("mlp.up_proj.weight", {hidden, dim});
  add("model.norm.weight", {dim});
  offset += static_cast<uint64_t>(h.seq_len) * head_dim * sizeof(float);  // legacy freq_cis_real/imag, unused
  if (!h.shared_classifier) add("lm_head.weight", {vocab, dim});
  if (offset != object.size) {
    return absl::DataLossError(absl::StrCat("corrupt llama2.c file ", uri, ": the header implies ", offset,
                                            " bytes, the file has ", object.size));
  }
  SortForStreaming(&tensors);
  ASSIGN_OR_RETURN(ModelDescriptor descriptor, ModelDescriptor::FromConfigJson(HfConfig(h).dump()));
  return std::unique_ptr<CheckpointReader>(new Llama2cReader(store, h, std::move(tensors), std::move(descriptor)));
}

}  // namespace lowbit
