// lowbit_llamacpp_quantize: llama.cpp's own quantizer (ggml_quantize_chunk, from the libggml-base.so that
// node-llama-cpp ships) applied to the tensors of a lowbit GGUF file: the baseline of `make gguf-quality`,
// and a consumer of lowbit's imatrix.gguf as llama-quantize --imatrix reads it (in_sum2 / counts).
//
// Usage: lowbit_llamacpp_quantize LIBGGML_BASE TEMPLATE.gguf F32.gguf OUT.gguf [IMATRIX.gguf]
// OUT has TEMPLATE's metadata, tensors and types; each quantized tensor's blocks are recomputed by ggml from
// F32.gguf's values of the same name (both files lowbit's, so rows are in the same order).
#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "core/checkpoint/gguf.h"
#include "core/storage/local_object_store.h"

namespace {

// ggml.h: size_t ggml_quantize_chunk(enum ggml_type, const float * src, void * dst, int64_t start,
//                                   int64_t nrows, int64_t n_per_row, const float * imatrix);
using QuantizeChunk = size_t (*)(int, const float*, void*, int64_t, int64_t, int64_t, const float*);
using QuantizeInit = void (*)(int);

int Fail(const std::string& what) {
  std::cerr << "lowbit_llamacpp_quantize: " << what << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace lowbit;
  if (argc != 5 && argc != 6) return Fail("usage: LIBGGML_BASE TEMPLATE.gguf F32.gguf OUT.gguf [IMATRIX.gguf]");
  void* ggml = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (ggml == nullptr) return Fail(dlerror());
  const auto quantize = reinterpret_cast<QuantizeChunk>(dlsym(ggml, "ggml_quantize_chunk"));
  const auto init = reinterpret_cast<QuantizeInit>(dlsym(ggml, "ggml_quantize_init"));
  if (quantize == nullptr || init == nullptr) return Fail("no ggml_quantize_chunk/ggml_quantize_init in the library");
  std::unique_ptr<LocalObjectStore> store = *LocalObjectStore::Create({"/"});
  auto read_header = [&](const char* path) {
    absl::StatusOr<GgufHeader> h = ReadGgufHeader(store.get(), path);
    if (!h.ok()) std::cerr << h.status() << "\n";
    return h;
  };
  auto tmpl = read_header(argv[2]), f32 = read_header(argv[3]);
  if (!tmpl.ok() || !f32.ok()) return 1;
  std::map<std::string, const GgufHeader::Entry*> source;
  for (const GgufHeader::Entry& e : f32->tensors) source[e.name] = &e;
  // The importance of each column: in_sum2 / counts, as llama-quantize's load_imatrix computes it.
  std::map<std::string, std::vector<float>> importance;
  if (argc == 6) {
    auto im = read_header(argv[5]);
    if (!im.ok()) return 1;
    std::map<std::string, std::string> bytes;
    for (const GgufHeader::Entry& e : im->tensors) bytes[e.name] = *store->ReadRange(argv[5], e.offset, e.bytes);
    for (const auto& [name, sum2] : bytes) {
      if (name.size() < 8 || name.substr(name.size() - 8) != ".in_sum2") continue;
      const std::string base = name.substr(0, name.size() - 8);
      float count;
      std::memcpy(&count, bytes.at(base + ".counts").data(), sizeof(float));
      std::vector<float> v(sum2.size() / sizeof(float));
      std::memcpy(v.data(), sum2.data(), sum2.size());
      for (float& x : v) x /= count;
      importance[base] = std::move(v);
    }
  }
  std::vector<GgufTensorSpec> specs;
  for (const GgufHeader::Entry& e : tmpl->tensors) specs.push_back({e.name, e.shape, e.type});
  auto out = *store->NewWriter(argv[4]);
  absl::StatusOr<std::unique_ptr<GgufWriter>> writer = GgufWriter::Create(out.get(), tmpl->metadata, specs);
  if (!writer.ok()) return Fail(std::string(writer.status().message()));
  int quantized = 0, weighted = 0;
  for (const GgufHeader::Entry& e : tmpl->tensors) {
    std::string data;
    if (!TraitsOf(e.type).quantized()) {
      data = *store->ReadRange(argv[2], e.offset, e.bytes);
    } else {
      const auto it = source.find(e.name);
      if (it == source.end() || it->second->type != GgmlType::kF32) return Fail(e.name + ": no F32 values in " + argv[3]);
      const std::string raw = *store->ReadRange(argv[3], it->second->offset, it->second->bytes);
      const int64_t cols = e.shape.back(), rows = static_cast<int64_t>(raw.size() / sizeof(float)) / cols;
      std::vector<float> values(raw.size() / sizeof(float));
      std::memcpy(values.data(), raw.data(), raw.size());
      data.assign(e.bytes, '\0');
      const auto imp = importance.find(e.name);
      const float* weights = imp != importance.end() && static_cast<int64_t>(imp->second.size()) == cols ? imp->second.data() : nullptr;
      init(static_cast<int>(e.type));
      if (quantize(static_cast<int>(e.type), values.data(), data.data(), 0, rows, cols, weights) != e.bytes) {
        return Fail(e.name + ": ggml wrote a different size");
      }
      ++quantized;
      weighted += weights != nullptr;
    }
    if (absl::Status s = (*writer)->Append(e.name, data); !s.ok()) return Fail(std::string(s.message()));
  }
  if (absl::Status s = (*writer)->Finish(); !s.ok()) return Fail(std::string(s.message()));
  if (absl::Status s = out->Commit(); !s.ok()) return Fail(std::string(s.message()));
  std::cout << "{\"quantized\": " << quantized << ", \"with_imatrix\": " << weighted << "}\n";
  return 0;
}
