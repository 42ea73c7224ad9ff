// ModelDescriptor: what a checkpoint is (architecture, dims) and what role each tensor plays.
//
// Built from a Hugging Face config.json (or synthesised by a reader that has none). It decides which
// tensors are the linear layers of decoder blocks (quantized) and which stay in high precision
// (embeddings, norms, and lm_head unless the job asks for it).
#ifndef LOWBIT_CORE_CHECKPOINT_MODEL_DESCRIPTOR_H_
#define LOWBIT_CORE_CHECKPOINT_MODEL_DESCRIPTOR_H_

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace lowbit {

enum class TensorRole {
  kLinear,     ///< a linear layer of a decoder block (q/k/v/o, gate/up/down, ...)
  kLmHead,     ///< the output projection
  kEmbedding,  ///< token embeddings
  kNorm,       ///< RMSNorm/LayerNorm weights
  kOther,      ///< biases, buffers, anything else: copied unchanged
};

struct ModelDescriptor {
  std::string architecture = "unknown";  ///< e.g. "LlamaForCausalLM"
  std::string model_type = "unknown";    ///< e.g. "llama"
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t vocab_size = 0;
  bool tie_word_embeddings = false;
  nlohmann::json config = nlohmann::json::object();  ///< the full config.json, written back on output

  // Parses config.json; INVALID_ARGUMENT if it is not a JSON object.
  static absl::StatusOr<ModelDescriptor> FromConfigJson(absl::string_view text);
  // A descriptor for a checkpoint with no config.json: roles come from tensor names alone.
  static ModelDescriptor Unknown();
};

// Whether a tensor is a mixture-of-experts router (never quantized).
bool IsRouter(absl::string_view name);
// The role of a tensor by its Hugging Face name and rank.
TensorRole RoleOf(absl::string_view name, size_t rank);
// The decoder block a tensor belongs to ("model.layers.7.mlp..." -> 7), or -1.
int LayerIndexOf(absl::string_view name);

}  // namespace lowbit

#endif  // LOWBIT_CORE_CHECKPOINT_MODEL_DESCRIPTOR_H_
