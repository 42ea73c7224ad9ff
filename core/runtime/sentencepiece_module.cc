// liblowbit_sentencepiece.so: core/runtime/sentencepiece_module.h over libsentencepiece. Standard library
// only besides it (its header declares an absl::string_view of its own).
#include "core/runtime/sentencepiece_module.h"

#include <sentencepiece_processor.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {

void* lowbit_spm_load(const char* model, size_t model_size, char* error, size_t error_size) {
  auto* processor = new sentencepiece::SentencePieceProcessor();
  const auto status = processor->LoadFromSerializedProto(std::string_view(model, model_size));
  if (status.ok()) return processor;
  std::snprintf(error, error_size, "%s", status.ToString().c_str());
  delete processor;
  return nullptr;
}

void lowbit_spm_free(void* processor) { delete static_cast<sentencepiece::SentencePieceProcessor*>(processor); }

int lowbit_spm_encode(const void* processor, const char* text, size_t text_size, int** ids, size_t* count) {
  std::vector<int> out;
  if (!static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Encode(std::string_view(text, text_size), &out).ok()) {
    return 1;
  }
  *count = out.size();
  *ids = static_cast<int*>(std::malloc(out.size() * sizeof(int) + 1));
  std::memcpy(*ids, out.data(), out.size() * sizeof(int));
  return 0;
}

int lowbit_spm_decode(const void* processor, const int* ids, size_t count, char** text, size_t* text_size) {
  std::string out;
  if (!static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Decode(std::vector<int>(ids, ids + count), &out).ok()) {
    return 1;
  }
  *text_size = out.size();
  *text = static_cast<char*>(std::malloc(out.size() + 1));
  std::memcpy(*text, out.data(), out.size());
  return 0;
}

int lowbit_spm_vocab_size(const void* processor) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->GetPieceSize();
}

int lowbit_spm_bos(const void* processor) { return static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->bos_id(); }
int lowbit_spm_eos(const void* processor) { return static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->eos_id(); }

int lowbit_spm_piece(const void* processor, int id, const char** text, size_t* text_size, float* score, int* kind) {
  const auto* p = static_cast<const sentencepiece::SentencePieceProcessor*>(processor);
  if (id < 0 || id >= p->GetPieceSize()) return 1;
  const std::string& piece = p->IdToPiece(id);
  *text = piece.data();
  *text_size = piece.size();
  *score = p->GetScore(id);
  *kind = p->IsUnknown(id) ? 1 : p->IsControl(id) ? 2 : p->IsUnused(id) ? 3 : p->IsByte(id) ? 4 : 0;
  return 0;
}

void lowbit_spm_release(void* buffer) { std::free(buffer); }

}  // extern "C"
