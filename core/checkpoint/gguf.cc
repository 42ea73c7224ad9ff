#include "core/checkpoint/gguf.h"

#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "core/checkpoint/architecture.h"

#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// gguf_type (ggml's gguf.h).
enum : uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7, kString = 8,
  kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

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
    case K::kArray:  // read back by length only; lowbit never writes one
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


namespace {

// Reads a header from a prefix of the file; OUT_OF_RANGE when the prefix is too short (read more).
class Cursor {
 public:
  explicit Cursor(absl::string_view bytes) : bytes_(bytes) {}
  template <typename T>
  absl::StatusOr<T> Get() {
    if (at_ + sizeof(T) > bytes_.size()) return absl::OutOfRangeError("short");
    T v;
    std::memcpy(&v, bytes_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  absl::StatusOr<std::string> GetString() {
    ASSIGN_OR_RETURN(const uint64_t n, Get<uint64_t>());
    if (n > (uint64_t{1} << 30)) return absl::InvalidArgumentError(absl::StrCat("a string of ", n, " bytes"));
    if (at_ + n > bytes_.size()) return absl::OutOfRangeError("short");
    std::string v(bytes_.substr(at_, n));
    at_ += n;
    return v;
  }
  absl::Status Skip(uint64_t n) {
    if (at_ + n > bytes_.size()) return absl::OutOfRangeError("short");
    at_ += n;
    return absl::OkStatus();
  }
  size_t at() const { return at_; }

 private:
  absl::string_view bytes_;
  size_t at_ = 0;
};

size_t ScalarBytes(uint32_t type) {
  switch (type) {
    case kUint8: case kInt8: case kBool: return 1;
    case kUint16: case kInt16: return 2;
    case kUint32: case kInt32: case kFloat32: return 4;
    case kUint64: case kInt64: case kFloat64: return 8;
    default: return 0;
  }
}

absl::StatusOr<GgufValue> GetScalar(uint32_t type, Cursor* c) {
  switch (type) {
    case kUint8: { ASSIGN_OR_RETURN(uint8_t v, c->Get<uint8_t>()); return GgufValue::U32(v); }
    case kUint16: { ASSIGN_OR_RETURN(uint16_t v, c->Get<uint16_t>()); return GgufValue::U32(v); }
    case kUint32: { ASSIGN_OR_RETURN(uint32_t v, c->Get<uint32_t>()); return GgufValue::U32(v); }
    case kUint64: { ASSIGN_OR_RETURN(uint64_t v, c->Get<uint64_t>()); GgufValue g = GgufValue::U32(0); g.integer = v; return g; }
    case kInt8: { ASSIGN_OR_RETURN(int8_t v, c->Get<int8_t>()); return GgufValue::I32(v); }
    case kInt16: { ASSIGN_OR_RETURN(int16_t v, c->Get<int16_t>()); return GgufValue::I32(v); }
    case kInt32: { ASSIGN_OR_RETURN(int32_t v, c->Get<int32_t>()); return GgufValue::I32(v); }
    case kInt64: { ASSIGN_OR_RETURN(int64_t v, c->Get<int64_t>()); GgufValue g = GgufValue::I32(0); g.integer = static_cast<uint64_t>(v); return g; }
    case kFloat32: { ASSIGN_OR_RETURN(float v, c->Get<float>()); return GgufValue::F32(v); }
    case kFloat64: { ASSIGN_OR_RETURN(double v, c->Get<double>()); GgufValue g = GgufValue::F32(0); g.number = v; return g; }
    case kBool: { ASSIGN_OR_RETURN(uint8_t v, c->Get<uint8_t>()); return GgufValue::Bool(v != 0); }
    case kString: { ASSIGN_OR_RETURN(std::string v, c->GetString()); return GgufValue::String(std::move(v)); }
    default: return absl::InvalidArgumentError(absl::StrCat("a metadata value of unknown type ", type));
  }
}

absl::StatusOr<GgufValue> GetValue(Cursor* c) {
  ASSIGN_OR_RETURN(const uint32_t type, c->Get<uint32_t>());
  if (type != kArray) return GetScalar(type, c);
  ASSIGN_OR_RETURN(const uint32_t element, c->Get<uint32_t>());
  ASSIGN_OR_RETURN(const uint64_t n, c->Get<uint64_t>());
  if (n > (uint64_t{1} << 32)) return absl::InvalidArgumentError(absl::StrCat("an array of ", n, " values"));
  GgufValue v;
  if (element == kString) {
    v.kind = GgufValue::Kind::kStrings;
    for (uint64_t i = 0; i < n; ++i) {
      ASSIGN_OR_RETURN(std::string s, c->GetString());
      v.texts.push_back(std::move(s));
    }
  } else if (element == kFloat32 || element == kInt32) {
    v.kind = element == kFloat32 ? GgufValue::Kind::kF32s : GgufValue::Kind::kI32s;
    for (uint64_t i = 0; i < n; ++i) {
      if (element == kFloat32) {
        ASSIGN_OR_RETURN(float f, c->Get<float>());
        v.floats.push_back(f);
      } else {
        ASSIGN_OR_RETURN(int32_t k, c->Get<int32_t>());
        v.ints.push_back(k);
      }
    }
  } else {
    if (ScalarBytes(element) == 0) return absl::InvalidArgumentError(absl::StrCat("an array of unknown type ", element));
    v.kind = GgufValue::Kind::kArray;
    v.integer = n;
    RETURN_IF_ERROR(c->Skip(n * ScalarBytes(element)));
  }
  return v;
}

absl::StatusOr<GgufHeader> ParseHeader(absl::string_view bytes, uint64_t file_size) {
  Cursor c(bytes);
  GgufHeader h;
  ASSIGN_OR_RETURN(const uint32_t magic, c.Get<uint32_t>());
  if (magic != 0x46554747) return absl::InvalidArgumentError("not a GGUF file (no GGUF magic)");
  ASSIGN_OR_RETURN(h.version, c.Get<uint32_t>());
  if (h.version != 2 && h.version != 3) return absl::InvalidArgumentError(absl::StrCat("GGUF version ", h.version, " (2 and 3 are read)"));
  ASSIGN_OR_RETURN(const uint64_t n_tensors, c.Get<uint64_t>());
  ASSIGN_OR_RETURN(const uint64_t n_kv, c.Get<uint64_t>());
  if (n_tensors > (uint64_t{1} << 20) || n_kv > (uint64_t{1} << 20)) return absl::InvalidArgumentError("implausible tensor or key counts");
  for (uint64_t i = 0; i < n_kv; ++i) {
    ASSIGN_OR_RETURN(std::string key, c.GetString());
    ASSIGN_OR_RETURN(GgufValue value, GetValue(&c));
    h.metadata.emplace_back(std::move(key), std::move(value));
  }
  uint64_t alignment = GgufWriter::kAlignment;
  if (const GgufValue* a = h.Find("general.alignment"); a != nullptr && a->kind == GgufValue::Kind::kU32) alignment = a->integer;
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) return absl::InvalidArgumentError("general.alignment is not a power of two");
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufHeader::Entry e;
    ASSIGN_OR_RETURN(e.name, c.GetString());
    ASSIGN_OR_RETURN(const uint32_t dims, c.Get<uint32_t>());
    if (dims == 0 || dims > 4) return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, " has ", dims, " dimensions"));
    double elements = 1;  // in double: a forged shape must not overflow the checks below
    for (uint32_t d = 0; d < dims; ++d) {
      ASSIGN_OR_RETURN(const uint64_t ne, c.Get<uint64_t>());
      elements *= static_cast<double>(ne);
      if (ne == 0 || elements > static_cast<double>(file_size) * 8) {
        return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, " has a dimension of ", ne, ", more values than the file holds"));
      }
      e.shape.insert(e.shape.begin(), static_cast<int64_t>(ne));
    }
    ASSIGN_OR_RETURN(const uint32_t type, c.Get<uint32_t>());
    const GgmlTypeTraits* t = FindGgmlType(static_cast<GgmlType>(type));
    if (t == nullptr) return absl::UnimplementedError(absl::StrCat("tensor ", e.name, " has ggml type ", type, ", which lowbit does not read"));
    e.type = t->type;
    if (e.shape.back() % t->block_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, ": rows of ", e.shape.back(), " values are not whole ", t->name, " blocks"));
    }
    ASSIGN_OR_RETURN(e.offset, c.Get<uint64_t>());
    e.bytes = GgufTensorSpec{e.name, e.shape, e.type}.Bytes();
    h.tensors.push_back(std::move(e));
  }
  const uint64_t data = (c.at() + alignment - 1) / alignment * alignment;
  for (GgufHeader::Entry& e : h.tensors) {
    if (e.offset % alignment != 0) return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, " is not aligned"));
    e.offset += data;
    if (e.offset + e.bytes > file_size) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", e.name, " runs past the end of the file (", file_size, " bytes)"));
    }
  }
  return h;
}

int64_t IntOf(const GgufHeader& h, const std::string& key, int64_t fallback) {
  const GgufValue* v = h.Find(key);
  return v != nullptr && (v->kind == GgufValue::Kind::kU32 || v->kind == GgufValue::Kind::kI32) ? static_cast<int64_t>(v->integer) : fallback;
}
double NumberOf(const GgufHeader& h, const std::string& key, double fallback) {
  const GgufValue* v = h.Find(key);
  return v != nullptr && v->kind == GgufValue::Kind::kF32 ? v->number : fallback;
}

class GgufReader final : public CheckpointReader {
 public:
  struct Stored {
    GgufHeader::Entry entry;
    std::vector<int64_t> row_order;  ///< file row i is HF row row_order[i]; empty: the same
  };
  GgufReader(ObjectStore* store, std::string uri, ModelDescriptor descriptor, std::vector<TensorInfo> tensors,
             std::map<std::string, Stored> stored)
      : CheckpointReader(store), uri_(std::move(uri)), stored_(std::move(stored)) {
    descriptor_ = std::move(descriptor);
    tensors_ = std::move(tensors);
  }

  absl::StatusOr<Tensor> Read(const TensorInfo& info) const override {
    const Stored& s = stored_.at(info.name);
    ASSIGN_OR_RETURN(const std::string raw, store_->ReadRange(uri_, s.entry.offset, s.entry.bytes));
    if (raw.size() != s.entry.bytes) {
      return absl::DataLossError(absl::StrCat("tensor ", s.entry.name, ": read ", raw.size(), " of ", s.entry.bytes, " bytes"));
    }
    // A permuted vector (q/k biases) is permuted value by value: rows of one.
    const int64_t cols = info.shape.size() == 1 && !s.row_order.empty() ? 1 : info.shape.back();
    const int64_t rows = NumElements(info.shape) / cols;
    const size_t row_bytes = TraitsOf(s.entry.type).RowBytes(cols);
    std::string out(static_cast<size_t>(rows * cols) * sizeof(float), '\0');
    float* values = reinterpret_cast<float*>(out.data());
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t r = s.row_order.empty() ? i : s.row_order[static_cast<size_t>(i)];
      DequantizeGgmlRow(s.entry.type, raw.data() + static_cast<size_t>(i) * row_bytes, cols, values + r * cols);
    }
    RETURN_IF_ERROR(CheckFinite(values, rows * cols, absl::StrCat("tensor ", s.entry.name)));
    return Tensor{info.name, DType::kF32, info.shape, std::move(out)};
  }

 private:
  const std::string uri_;
  const std::map<std::string, Stored> stored_;
};

}  // namespace

const GgufValue* GgufHeader::Find(absl::string_view key) const {
  for (const auto& [k, v] : metadata) {
    if (k == key) return &v;
  }
  return nullptr;
}

absl::StatusOr<GgufHeader> ReadGgufHeader(ObjectStore* store, absl::string_view uri) {
  ASSIGN_OR_RETURN(const ObjectInfo info, store->Stat(uri));
  // The header's size is known only once read: read a prefix, and four times as much while it falls short.
  for (uint64_t prefix = uint64_t{1} << 20;; prefix *= 4) {
    const uint64_t n = std::min(prefix, info.size);
    ASSIGN_OR_RETURN(const std::string bytes, store->ReadRange(uri, 0, n));
    absl::StatusOr<GgufHeader> h = ParseHeader(bytes, info.size);
    if (h.ok() || !absl::IsOutOfRange(h.status())) {
      if (!h.ok()) return absl::Status(h.status().code(), absl::StrCat(uri, ": ", h.status().message()));
      return h;
    }
    if (n == info.size) return absl::InvalidArgumentError(absl::StrCat(uri, ": the GGUF header is cut short"));
  }
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenGguf(ObjectStore* store, absl::string_view uri) {
  ASSIGN_OR_RETURN(const GgufHeader h, ReadGgufHeader(store, uri));
  const GgufValue* arch_name = h.Find("general.architecture");
  if (arch_name == nullptr || arch_name->kind != GgufValue::Kind::kString) {
    return absl::InvalidArgumentError(absl::StrCat(uri, ": no general.architecture"));
  }
  const Architecture* arch = FindArchitectureByGguf(arch_name->text);
  if (arch == nullptr) return absl::UnimplementedError(absl::StrCat(uri, ": GGUF architecture ", arch_name->text, " is not supported"));
  const std::string a = arch_name->text;
  const GgufValue* scaling = h.Find(a + ".rope.scaling.type");
  if (scaling != nullptr && scaling->text != "none" && scaling->text != "linear") {
    return absl::UnimplementedError(absl::StrCat(uri, ": rope scaling ", scaling->text, " is not read yet"));
  }
  bool has_output = false;
  int64_t embedding_rows = 0;
  for (const GgufHeader::Entry& e : h.tensors) {
    has_output = has_output || e.name == "output.weight";
    if (e.name == "token_embd.weight") embedding_rows = e.shape[0];
    if (e.name == "rope_freqs.weight") {  // per-frequency divisors (llama3's scaling): not mapped back to a config
      return absl::UnimplementedError(absl::StrCat(uri, ": rope_freqs.weight (llama3 rope scaling) is not read yet"));
    }
  }
  const int64_t heads = IntOf(h, a + ".attention.head_count", 0), dim = IntOf(h, a + ".embedding_length", 0);
  const int64_t kv_heads = IntOf(h, a + ".attention.head_count_kv", heads);
  const int64_t head_dim = IntOf(h, a + ".attention.key_length", heads > 0 ? dim / heads : 0);
  nlohmann::json config = {
      {"architectures", {arch->name}},
      {"model_type", a},
      {"hidden_size", dim},
      {"intermediate_size", IntOf(h, a + ".feed_forward_length", 0)},
      {"num_hidden_layers", IntOf(h, a + ".block_count", 0)},
      {"num_attention_heads", heads},
      {"num_key_value_heads", kv_heads},
      {"head_dim", head_dim},
      {"vocab_size", IntOf(h, a + ".vocab_size", embedding_rows)},
      {"max_position_embeddings", IntOf(h, a + ".context_length", 2048)},
      {"rms_norm_eps", NumberOf(h, a + ".attention.layer_norm_rms_epsilon", 1e-5)},
      {"rope_theta", NumberOf(h, a + ".rope.freq_base", 10000.0)},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", !has_output},
  };
  if (scaling != nullptr && scaling->text == "linear") {
    config["rope_scaling"] = {{"type", "linear"}, {"factor", NumberOf(h, a + ".rope.scaling.factor", 1.0)}};
  }
  if (const int64_t bos = IntOf(h, "tokenizer.ggml.bos_token_id", -1); bos >= 0) config["bos_token_id"] = bos;
  if (const int64_t eos = IntOf(h, "tokenizer.ggml.eos_token_id", -1); eos >= 0) config["eos_token_id"] = eos;
  ASSIGN_OR_RETURN(ModelDescriptor descriptor, ModelDescriptor::FromConfigJson(config.dump()));
  std::vector<TensorInfo> tensors;
  std::map<std::string, GgufReader::Stored> stored;
  for (const GgufHeader::Entry& e : h.tensors) {
    const std::string name = HfTensorName(*arch, e.name);
    if (name.empty()) continue;  // llama.cpp's own derived tensors (rope_freqs): nothing of the HF model
    tensors.push_back({name, DType::kF32, e.shape, std::string(uri), e.offset, static_cast<uint64_t>(NumElements(e.shape)) * 4});
    stored[name] = {e, GgufRowOrder(*arch, heads, kv_heads, head_dim, name)};
    const std::vector<int64_t>& order = stored[name].row_order;
    if (!order.empty() && static_cast<int64_t>(order.size()) != e.shape[0]) {
      return absl::InvalidArgumentError(absl::StrCat(uri, ": tensor ", e.name, " has ", e.shape[0], " rows, its heads ", order.size()));
    }
  }
  SortForStreaming(&tensors);
  return std::unique_ptr<CheckpointReader>(new GgufReader(store, std::string(uri), std::move(descriptor), std::move(tensors), std::move(stored)));
}

}  // namespace lowbit
