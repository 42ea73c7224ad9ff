#include "core/pack/native.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "core/tensor/dtype.h"

namespace lowbit {
namespace {

// Codes are stored as `CodeRows` bit streams of `CodesPerRow` codes each.
int64_t CodeRows(const NativeLayout& l) { return l.along_rows ? l.rows / l.dim : l.rows; }
int64_t CodesPerRow(const NativeLayout& l) { return l.along_rows ? l.cols : l.cols / l.dim; }
int64_t CodeBytesPerRow(const NativeLayout& l) { return (CodesPerRow(l) * l.index_bits + 7) / 8; }
int64_t Tiles(const NativeLayout& l) {
  return ((l.rows + l.group_rows - 1) / l.group_rows) * ((l.cols + l.group_cols - 1) / l.group_cols);
}

Tensor Zeros(const TensorSpec& s) {
  return {s.name, s.dtype, s.shape, std::string(static_cast<size_t>(NumElements(s.shape)) * DTypeSize(s.dtype), '\0')};
}

void PutF16(const std::vector<float>& values, Tensor* t) {
  ConvertFromF32(DType::kF16, values.data(), values.size(), t->bytes.data());
}

std::vector<float> GetF16(const Tensor& t) {
  std::vector<float> out(t.bytes.size() / 2);
  ConvertToF32(DType::kF16, t.bytes.data(), out.size(), out.data());
  return out;
}

absl::StatusOr<const Tensor*> Part(const std::map<std::string, Tensor>& parts, const TensorSpec& spec) {
  auto it = parts.find(spec.name);
  if (it == parts.end()) return absl::InvalidArgumentError(absl::StrCat("tensor ", spec.name, " is missing"));
  if (absl::Status s = ExpectSpec(it->second, spec); !s.ok()) return s;
  return &it->second;
}

}  // namespace

nlohmann::json NativeLayout::ToJson() const {
  if (scheme == Scheme::kOneBit) return {{"scheme", "onebit"}, {"rows", rows}, {"cols", cols}};
  if (scheme == Scheme::kGrid) {
    return {{"scheme", "grid"}, {"rows", rows}, {"cols", cols}, {"bits", index_bits}, {"group_size", group_size}, {"g_idx", g_idx}};
  }
  return {{"scheme", "codebook"}, {"rows", rows},           {"cols", cols},
          {"dim", dim},           {"vector_axis", along_rows ? "output" : "input"}, {"index_bits", index_bits},
          {"group_rows", group_rows}, {"group_cols", group_cols}, {"codebook_dtype", int8_codebook ? "int8" : "float16"},
          {"row_scale", row_scale}};
}

absl::StatusOr<NativeLayout> NativeLayout::FromJson(absl::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](absl::string_view why) { return absl::InvalidArgumentError(absl::StrCat("layout ", text, ": ", why)); };
  if (!j.is_object() || !j.contains("scheme") || !j["scheme"].is_string()) return bad("no scheme");
  auto integer = [&](const char* key, int64_t* out) {
    if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() <= 0) return false;
    *out = j[key].get<int64_t>();
    return true;
  };
  NativeLayout l;
  if (!integer("rows", &l.rows) || !integer("cols", &l.cols)) return bad("rows and cols must be positive integers");
  if (j["scheme"] == "onebit") {
    l.scheme = Scheme::kOneBit;
    return l;
  }
  if (j["scheme"] == "grid") {
    l.scheme = Scheme::kGrid;
    int64_t bits = 0;
    if (!integer("bits", &bits) || bits > 8 || !integer("group_size", &l.group_size) || l.group_size > l.cols) {
      return bad("bits must be 1..8 and group_size 1..cols");
    }
    l.index_bits = static_cast<int>(bits);
    l.g_idx = j.value("g_idx", false);
    return l;
  }
  if (j["scheme"] != "codebook") return bad("unknown scheme");
  int64_t dim = 0, bits = 0;
  if (!integer("dim", &dim) || !integer("index_bits", &bits) || !integer("group_rows", &l.group_rows) ||
      !integer("group_cols", &l.group_cols)) {
    return bad("dim, index_bits, group_rows and group_cols must be positive integers");
  }
  const std::string axis = j.value("vector_axis", "input");
  if (axis != "input" && axis != "output") return bad("vector_axis must be input or output");
  l.along_rows = axis == "output";
  const int64_t length = l.along_rows ? l.rows : l.cols, tile = l.along_rows ? l.group_rows : l.group_cols;
  if ((dim != 1 && dim != 2 && dim != 4) || bits > 16 || length % dim != 0 || tile % dim != 0) {
    return bad("dim must be 1, 2 or 4 and divide the vector axis and its tile size; index_bits at most 16");
  }
  l.dim = static_cast<int>(dim);
  l.index_bits = static_cast<int>(bits);
  if (!j.contains("codebook_dtype") || (j["codebook_dtype"] != "int8" && j["codebook_dtype"] != "float16")) {
    return bad("codebook_dtype must be int8 or float16");
  }
  l.int8_codebook = j["codebook_dtype"] == "int8";
  l.row_scale = j.value("row_scale", false);
  return l;
}

NativeLayout NativeLayoutFor(int64_t rows, int64_t cols, const QuantConfig& config) {
  NativeLayout l;
  l.rows = rows;
  l.cols = cols;
  if (IsUniformGridMethod(config.method)) {
    l.scheme = NativeLayout::Scheme::kGrid;
    l.index_bits = config.bits;
    l.group_size = config.group_size == -1 || config.group_size > cols ? cols : config.group_size;
    l.g_idx = config.method == Method::kGptq && config.act_order;
    return l;
  }
  if (config.method == Method::kOneBit) {
    l.scheme = NativeLayout::Scheme::kOneBit;
    return l;
  }
  if (config.method == Method::kVq) {
    const VqOptions& v = config.vq;
    l.dim = v.dim;
    l.index_bits = v.dim * v.bits;
    l.group_rows = v.group_rows == -1 ? rows : std::min(v.group_rows, rows);
    l.group_cols = std::min(v.group_cols, cols);
    l.int8_codebook = true;
    return l;
  }
  const LutOptions& o = config.lut;
  l.dim = o.cluster_dim;
  l.along_rows = o.cluster_dim > 1;
  l.index_bits = o.bits;
  l.group_rows = o.granularity == LutGranularity::kPerTensor ? rows : std::min(o.group_size, rows);
  l.group_cols = cols;
  l.row_scale = o.per_channel_scale;
  return l;
}

std::vector<TensorSpec> NativeTensorSpecs(const std::string& prefix, const NativeLayout& l) {
  if (l.scheme == NativeLayout::Scheme::kGrid) {
    const int64_t groups = (l.cols + l.group_size - 1) / l.group_size;
    std::vector<TensorSpec> specs = {{prefix + ".codes", DType::kU8, {l.rows, (l.cols * l.index_bits + 7) / 8}},
                                     {prefix + ".scales", DType::kF16, {l.rows, groups}},
                                     {prefix + ".zeros", DType::kU8, {l.rows, groups}}};
    if (l.g_idx) specs.push_back({prefix + ".g_idx", DType::kI32, {l.cols}});
    return specs;
  }
  if (l.scheme == NativeLayout::Scheme::kOneBit) {
    return {{prefix + ".sign", DType::kU8, {l.rows, (l.cols + 7) / 8}},
            {prefix + ".a", DType::kF16, {l.rows}},
            {prefix + ".b", DType::kF16, {l.cols}}};
  }
  std::vector<TensorSpec> specs = {
      {prefix + ".codes", DType::kU8, {CodeRows(l), CodeBytesPerRow(l)}},
      {prefix + ".codebook", l.int8_codebook ? DType::kI8 : DType::kF16, {Tiles(l), int64_t{1} << l.index_bits, l.dim}}};
  if (l.int8_codebook) specs.push_back({prefix + ".codebook_scale", DType::kF16, {Tiles(l)}});
  if (l.row_scale) specs.push_back({prefix + ".row_scale", DType::kF16, {l.rows}});
  return specs;
}

// Writes `n` codes of `bits` each as a little-endian bit stream from `row`; ReadBits is its inverse.
void WriteBits(const uint8_t* codes, int64_t n, int bits, uint8_t* row) {
  for (int64_t i = 0; i < n; ++i)
    for (int b = 0; b < bits; ++b) {
      const int64_t bit = i * bits + b;
      if ((codes[i] >> b) & 1) row[bit / 8] |= static_cast<uint8_t>(1 << (bit % 8));
    }
}

void ReadBits(const uint8_t* row, int64_t n, int bits, uint8_t* codes) {
  for (int64_t i = 0; i < n; ++i) {
    uint32_t code = 0;
    for (int b = 0; b < bits; ++b) {
      const int64_t bit = i * bits + b;
      code |= static_cast<uint32_t>((row[bit / 8] >> (bit % 8)) & 1) << b;
    }
    codes[i] = static_cast<uint8_t>(code);
  }
}

absl::StatusOr<std::vector<Tensor>> PackNative(const std::string& prefix, const QuantizedLayer& layer) {
  if (const auto* q = std::get_if<QuantizedTensor>(&layer)) {
    NativeLayout l;
    l.scheme = NativeLayout::Scheme::kGrid;
    l.rows = q->rows, l.cols = q->cols, l.index_bits = q->bits;
    l.group_size = q->group_size == -1 || q->group_size > q->cols ? q->cols : q->group_size;
    l.g_idx = !q->g_idx.empty();
    const std::vector<TensorSpec> specs = NativeTensorSpecs(prefix, l);
    std::vector<Tensor> out;
    for (const TensorSpec& s : specs) out.push_back(Zeros(s));
    const int64_t stride = specs[0].shape[1];
    for (int64_t r = 0; r < q->rows; ++r) {
      WriteBits(q->codes.data() + r * q->cols, q->cols, q->bits, reinterpret_cast<uint8_t*>(out[0].bytes.data()) + r * stride);
    }
    PutF16(q->scales, &out[1]);
    for (size_t i = 0; i < q->zeros.size(); ++i) {
      if (q->zeros[i] < 0 || q->zeros[i] > 255) return absl::InvalidArgumentError("a zero point outside 0..255");
      out[2].bytes[i] = static_cast<char>(q->zeros[i]);
    }
    if (l.g_idx) std::memcpy(out[3].bytes.data(), q->g_idx.data(), q->g_idx.size() * sizeof(int32_t));
    return out;
  }
  if (const auto* t = std::get_if<OneBitTensor>(&layer)) {
    NativeLayout l;
    l.scheme = NativeLayout::Scheme::kOneBit;
    l.rows = t->rows, l.cols = t->cols;
    std::vector<TensorSpec> specs = NativeTensorSpecs(prefix, l);
    std::vector<Tensor> out = {Zeros(specs[0]), Zeros(specs[1]), Zeros(specs[2])};
    const int64_t stride = specs[0].shape[1];
    for (int64_t r = 0; r < t->rows; ++r)
      for (int64_t c = 0; c < t->cols; ++c)
        if (t->signs[r * t->cols + c]) out[0].bytes[r * stride + c / 8] |= static_cast<char>(1 << (c % 8));
    PutF16(t->a, &out[1]);
    PutF16(t->b, &out[2]);
    return out;
  }
  const auto* t = std::get_if<CodebookTensor>(&layer);
  if (t == nullptr) return absl::InvalidArgumentError("the native layout holds codebook and OneBit layers");
  NativeLayout l;
  l.rows = t->rows, l.cols = t->cols, l.dim = t->dim, l.index_bits = t->index_bits, l.along_rows = t->along_rows;
  l.group_rows = t->group_rows, l.group_cols = t->group_cols;
  l.int8_codebook = t->storage == CodebookTensor::Storage::kInt8;
  l.row_scale = !t->row_scales.empty();
  const std::vector<TensorSpec> specs = NativeTensorSpecs(prefix, l);
  std::vector<Tensor> out;
  for (const TensorSpec& s : specs) out.push_back(Zeros(s));
  const int64_t stride = specs[0].shape[1], vectors = CodesPerRow(l);
  for (int64_t r = 0; r < CodeRows(l); ++r) {
    uint8_t* row = reinterpret_cast<uint8_t*>(out[0].bytes.data()) + r * stride;
    for (int64_t v = 0; v < vectors; ++v) {
      const uint32_t code = t->codes[r * vectors + v];
      for (int b = 0; b < t->index_bits; ++b) {
        const int64_t bit = v * t->index_bits + b;
        if ((code >> b) & 1) row[bit / 8] |= static_cast<uint8_t>(1 << (bit % 8));
      }
    }
  }
  size_t next = 2;
  if (l.int8_codebook) {
    int8_t* q = reinterpret_cast<int8_t*>(out[1].bytes.data());
    const int64_t per_tile = t->entries() * t->dim;
    for (int64_t tile = 0; tile < t->tiles(); ++tile) {
      for (int64_t i = 0; i < per_tile; ++i) {
        q[tile * per_tile + i] = static_cast<int8_t>(std::lrint(t->codebooks[tile * per_tile + i] / t->codebook_scales[tile]));
      }
    }
    PutF16(t->codebook_scales, &out[next++]);
  } else {
    PutF16(t->codebooks, &out[1]);
  }
  if (l.row_scale) PutF16(t->row_scales, &out[next]);
  return out;
}

absl::StatusOr<QuantizedLayer> UnpackNative(const std::string& prefix, const NativeLayout& l,
                                            const std::map<std::string, Tensor>& parts) {
  const std::vector<TensorSpec> specs = NativeTensorSpecs(prefix, l);
  std::vector<const Tensor*> t;
  for (const TensorSpec& s : specs) {
    absl::StatusOr<const Tensor*> part = Part(parts, s);
    if (!part.ok()) return part.status();
    t.push_back(*part);
  }
  if (l.scheme == NativeLayout::Scheme::kGrid) {
    QuantizedTensor q;
    q.rows = l.rows, q.cols = l.cols, q.bits = l.index_bits, q.group_size = l.group_size;
    q.codes.resize(static_cast<size_t>(l.rows * l.cols));
    const int64_t stride = specs[0].shape[1];
    for (int64_t r = 0; r < l.rows; ++r) {
      ReadBits(reinterpret_cast<const uint8_t*>(t[0]->bytes.data()) + r * stride, l.cols, l.index_bits, q.codes.data() + r * l.cols);
    }
    q.scales = GetF16(*t[1]);
    q.zeros.assign(t[2]->bytes.begin(), t[2]->bytes.end());
    for (int32_t& z : q.zeros) z &= 0xFF;  // the bytes are unsigned
    if (l.g_idx) {
      q.g_idx.resize(static_cast<size_t>(l.cols));
      std::memcpy(q.g_idx.data(), t[3]->bytes.data(), q.g_idx.size() * sizeof(int32_t));
      for (const int32_t g : q.g_idx) {
        if (g < 0 || g >= q.num_groups()) return absl::InvalidArgumentError(absl::StrCat("tensor ", prefix, ".g_idx names group ", g));
      }
    }
    for (float v : q.scales) {
      if (!std::isfinite(v)) return absl::InvalidArgumentError(absl::StrCat("tensor ", prefix, ".scales holds a non-finite value"));
    }
    const int32_t mid = 1 << (q.bits - 1);
    q.symmetric = std::all_of(q.zeros.begin(), q.zeros.end(), [mid](int32_t z) { return z == mid; });
    return q;
  }
  if (l.scheme == NativeLayout::Scheme::kOneBit) {
    OneBitTensor o;
    o.rows = l.rows, o.cols = l.cols;
    o.signs.resize(static_cast<size_t>(l.rows * l.cols));
    const int64_t stride = specs[0].shape[1];
    for (int64_t r = 0; r < l.rows; ++r)
      for (int64_t c = 0; c < l.cols; ++c)
        o.signs[r * l.cols + c] = (static_cast<uint8_t>(t[0]->bytes[r * stride + c / 8]) >> (c % 8)) & 1;
    o.a = GetF16(*t[1]);
    o.b = GetF16(*t[2]);
    return o;
  }
  CodebookTensor c;
  c.rows = l.rows, c.cols = l.cols, c.dim = l.dim, c.index_bits = l.index_bits, c.along_rows = l.along_rows;
  c.group_rows = l.group_rows, c.group_cols = l.group_cols;
  c.storage = l.int8_codebook ? CodebookTensor::Storage::kInt8 : CodebookTensor::Storage::kF16;
  const int64_t stride = specs[0].shape[1], vectors = CodesPerRow(l);
  c.codes.resize(static_cast<size_t>(CodeRows(l) * vectors));
  for (int64_t r = 0; r < CodeRows(l); ++r) {
    const uint8_t* row = reinterpret_cast<const uint8_t*>(t[0]->bytes.data()) + r * stride;
    for (int64_t v = 0; v < vectors; ++v) {
      uint32_t code = 0;
      for (int b = 0; b < l.index_bits; ++b) {
        const int64_t bit = v * l.index_bits + b;
        code |= static_cast<uint32_t>((row[bit / 8] >> (bit % 8)) & 1) << b;
      }
      c.codes[r * vectors + v] = static_cast<uint16_t>(code);
    }
  }
  size_t next = 2;
  if (l.int8_codebook) {
    c.codebook_scales = GetF16(*t[next++]);
    const int64_t per_tile = c.entries() * c.dim;
    c.codebooks.resize(t[1]->bytes.size());
    for (size_t i = 0; i < c.codebooks.size(); ++i) {
      c.codebooks[i] = static_cast<float>(static_cast<int8_t>(t[1]->bytes[i])) * c.codebook_scales[i / per_tile];
    }
  } else {
    c.codebooks = GetF16(*t[1]);
  }
  if (l.row_scale) c.row_scales = GetF16(*t[next]);
  for (float v : c.codebooks) {
    if (!std::isfinite(v)) return absl::InvalidArgumentError(absl::StrCat("tensor ", prefix, ".codebook holds a non-finite value"));
  }
  return c;
}

nlohmann::json NativeQuantizeConfig(const QuantConfig& config) {
  nlohmann::json j = {{"quant_method", "lowbit"}, {"format", "native"}, {"format_version", 1},
                      {"method", MethodName(config.method)}};
  return j;
}

}  // namespace lowbit
