#include "core/checkpoint/gguf.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// gguf_type (ggml's gguf.h).
enum : uint32_t { kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7, kString = 8, kArray = 9 };

class Buffer {
 public:
  template <typename T>
  void Put(T v) {
    const size_t at = bytes.size();
    bytes.resize(at + sizeof(T));
    std::memcpy(bytes.data() + at, &v, sizeof(T));
  }
  void PutString(const std::string& s) {
    Put<uint64_t>(s.size());
    bytes += s;
  }
  void PadTo(uint64_t alignment) { bytes.resize((bytes.size() + alignment - 1) / alignment * alignment, '\0'); }
  std::string bytes;
};

void PutValue(const GgufValue& v, Buffer* b) {
  using K = GgufValue::Kind;
  switch (v.kind) {
    case K::kU32: b->Put<uint32_t>(kUint32), b->Put<uint32_t>(static_cast<uint32_t>(v.integer)); break;
    case K::kI32: b->Put<uint32_t>(kInt32), b->Put<int32_t>(static_cast<int32_t>(v.integer)); break;
    case K::kF32: b->Put<uint32_t>(kFloat32), b->Put<float>(static_cast<float>(v.number)); break;
    case K::kBool: b->Put<uint32_t>(kBool), b->Put<uint8_t>(v.integer ? 1 : 0); break;
    case K::kString: b->Put<uint32_t>(kString), b->PutString(v.text); break;
    case K::kStrings:
      b->Put<uint32_t>(kArray), b->Put<uint32_t>(kString), b->Put<uint64_t>(v.texts.size());
      for (const std::string& s : v.texts) b->PutString(s);
      break;
    case K::kF32s:
      b->Put<uint32_t>(kArray), b->Put<uint32_t>(kFloat32), b->Put<uint64_t>(v.floats.size());
      for (const float f : v.floats) b->Put<float>(f);
      break;
    case K::kI32s:
      b->Put<uint32_t>(kArray), b->Put<uint32_t>(kInt32), b->Put<uint64_t>(v.ints.size());
      for (const int32_t i : v.ints) b->Put<int32_t>(i);
      break;
  }
}

uint64_t Aligned(uint64_t n) { return (n + GgufWriter::kAlignment - 1) / GgufWriter::kAlignment * GgufWriter::kAlignment; }

}  // namespace

GgufValue GgufValue::U32(uint32_t v) { GgufValue g; g.kind = Kind::kU32; g.integer = v; return g; }
GgufValue GgufValue::I32(int32_t v) { GgufValue g; g.kind = Kind::kI32; g.integer = static_cast<uint64_t>(static_cast<uint32_t>(v)); return g; }
GgufValue GgufValue::F32(float v) { GgufValue g; g.kind = Kind::kF32; g.number = v; return g; }
GgufValue GgufValue::Bool(bool v) { GgufValue g; g.kind = Kind::kBool; g.integer = v; return g; }
GgufValue GgufValue::String(std::string v) { GgufValue g; g.kind = Kind::kString; g.text = std::move(v); return g; }
GgufValue GgufValue::Strings(std::vector<std::string> v) { GgufValue g; g.kind = Kind::kStrings; g.texts = std::move(v); return g; }
GgufValue GgufValue::F32s(std::vector<float> v) { GgufValue g; g.kind = Kind::kF32s; g.floats = std::move(v); return g; }
GgufValue GgufValue::I32s(std::vector<int32_t> v) { GgufValue g; g.kind = Kind::kI32s; g.ints = std::move(v); return g; }

uint64_t GgufTensorSpec::Bytes() const {
  const GgmlTypeTraits& t = TraitsOf(type);
  const int64_t cols = shape.empty() ? 1 : shape.back();
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  return static_cast<uint64_t>(rows) * t.RowBytes(cols);
}

absl::StatusOr<std::unique_ptr<GgufWriter>> GgufWriter::Create(ObjectWriter* out, const GgufMetadata& metadata,
                                                               std::vector<GgufTensorSpec> tensors) {
  Buffer b;
  b.Put<uint32_t>(0x46554747);  // "GGUF"
  b.Put<uint32_t>(3);
  b.Put<uint64_t>(tensors.size());
  b.Put<uint64_t>(metadata.size());
  for (const auto& [key, value] : metadata) {
    b.PutString(key);
    PutValue(value, &b);
  }
  uint64_t offset = 0;
  for (const GgufTensorSpec& t : tensors) {
    const GgmlTypeTraits& traits = TraitsOf(t.type);
    if (t.shape.empty() || t.shape.back() % traits.block_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, ": rows of ", t.shape.empty() ? 0 : t.shape.back(),
                                                     " values are not whole ", traits.name, " blocks"));
    }
    b.PutString(t.name);
    b.Put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) b.Put<uint64_t>(static_cast<uint64_t>(*it));
    b.Put<uint32_t>(static_cast<uint32_t>(t.type));
    b.Put<uint64_t>(offset);
    offset = Aligned(offset + t.Bytes());
  }
  b.PadTo(kAlignment);
  RETURN_IF_ERROR(out->Append(b.bytes));
  return std::unique_ptr<GgufWriter>(new GgufWriter(out, std::move(tensors)));
}

absl::Status GgufWriter::Append(absl::string_view name, absl::string_view bytes) {
  if (next_ >= tensors_.size() || tensors_[next_].name != name) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " written out of order"));
  }
  const uint64_t size = tensors_[next_].Bytes();
  if (bytes.size() != size) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has ", bytes.size(), " bytes, its header says ", size));
  }
  ++next_;
  RETURN_IF_ERROR(out_->Append(bytes));
  const uint64_t padding = Aligned(size) - size;
  return padding == 0 || next_ == tensors_.size() ? absl::OkStatus() : out_->Append(std::string(padding, '\0'));
}

absl::Status GgufWriter::Finish() const {
  if (next_ != tensors_.size()) {
    return absl::FailedPreconditionError(absl::StrCat("only ", next_, " of ", tensors_.size(), " tensors were written"));
  }
  return absl::OkStatus();
}

}  // namespace lowbit
