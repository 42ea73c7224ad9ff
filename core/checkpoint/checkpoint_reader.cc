#include "core/checkpoint/checkpoint_reader.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/checkpoint/gguf.h"
#include "core/checkpoint/llama2c.h"
#include "core/checkpoint/safetensors.h"
#include "core/util/status_macros.h"

namespace lowbit {

uint64_t CheckpointReader::total_bytes() const {
  uint64_t total = 0;
  for (const TensorInfo& t : tensors_) total += t.size;
  return total;
}

void SortForStreaming(std::vector<TensorInfo>* tensors) {
  auto rank = [](const TensorInfo& t) {
    if (LayerIndexOf(t.name) >= 0) return 1;  // decoder blocks sit between the embeddings and the rest
    return RoleOf(t.name, t.shape.size()) == TensorRole::kEmbedding ? 0 : 2;
  };
  std::stable_sort(tensors->begin(), tensors->end(), [&](const TensorInfo& a, const TensorInfo& b) {
    const int ra = rank(a), rb = rank(b);
    if (ra != rb) return ra < rb;
    const int la = LayerIndexOf(a.name), lb = LayerIndexOf(b.name);
    if (la != lb) return la < lb;
    return a.name < b.name;
  });
}

absl::StatusOr<Tensor> CheckpointReader::Read(const TensorInfo& info) const {
  absl::StatusOr<std::string> bytes = store_->ReadRange(info.uri, info.offset, info.size);
  if (!bytes.ok()) {
    if (absl::IsOutOfRange(bytes.status())) {
      return absl::DataLossError(absl::StrCat("tensor ", info.name, " in ", info.uri, ": ", bytes.status().message()));
    }
    return bytes.status();
  }
  if (bytes->size() != info.size) {
    return absl::DataLossError(absl::StrCat("tensor ", info.name, " in ", info.uri, ": read ", bytes->size(),
                                            " bytes, expected ", info.size));
  }
  return Tensor{info.name, info.dtype, info.shape, *std::move(bytes)};
}

std::string CheckpointDirectory(absl::string_view uri) {
  for (const char* suffix : {".safetensors", ".json", ".bin"}) {
    if (absl::EndsWith(uri, suffix)) return ParentUri(uri);
  }
  while (absl::EndsWith(uri, "/")) uri.remove_suffix(1);
  return std::string(uri);
}

std::string CheckpointName(absl::string_view uri) {
  const std::string dir = CheckpointDirectory(uri);
  const std::string name = dir.substr(dir.rfind('/') + 1);
  if (!name.empty() && name != ".") return name;
  // A single-file checkpoint at the store's root ("stories260K.bin"): its file name without the extension.
  absl::string_view file = uri.substr(uri.rfind('/') + 1);
  return std::string(file.substr(0, file.find('.')));
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenCheckpoint(ObjectStore* store, absl::string_view uri) {
  if (absl::EndsWith(uri, ".bin")) return OpenLlama2c(store, uri);
  if (absl::EndsWith(uri, ".gguf")) return OpenGguf(store, uri);
  if (absl::EndsWith(uri, ".safetensors") || absl::EndsWith(uri, ".index.json")) return OpenSafetensors(store, uri);
  // A directory: prefer the sharded index, then a single file, then lowbit's GGUF output.
  for (const char* name : {"model.safetensors.index.json", "model.safetensors"}) {
    const std::string candidate = JoinUri(uri, name);
    if (store->Stat(candidate).ok()) return OpenSafetensors(store, candidate);
  }
  if (const std::string gguf = JoinUri(uri, "model.gguf"); store->Stat(gguf).ok()) return OpenGguf(store, gguf);
  return absl::NotFoundError(absl::StrCat("no checkpoint at ", uri,
                                          " (expected a .safetensors, .index.json, .gguf or llama2.c .bin file, "
                                          "or a directory with model.safetensors[.index.json] or model.gguf)"));
}

}  // namespace lowbit
