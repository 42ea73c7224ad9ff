#include "core/quant/ggml_types.h"

#include <cstring>

#include "absl/strings/match.h"
#include "core/tensor/dtype.h"

namespace lowbit {
namespace {

constexpr int QK = 32;    // values per block of the legacy types and IQ4_NL (ggml-common.h QK4_0 ... QK8_0)
constexpr int QK_K = 256;  // values per super-block of the K-quants and IQ4_XS
constexpr int K_SCALE_SIZE = 12;

// ggml-common.h's blocks.
struct BlockQ4_0 { uint16_t d; uint8_t qs[QK / 2]; };
struct BlockQ4_1 { uint16_t d, m; uint8_t qs[QK / 2]; };
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct BlockQ5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK / 2]; };
struct BlockQ8_0 { uint16_t d; int8_t qs[QK]; };
struct BlockQ2_K { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; uint16_t d, dmin; };
struct BlockQ3_K { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; };
struct BlockQ5_K { uint16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; };
struct BlockQ6_K { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; uint16_t d; };
struct BlockIQ4_NL { uint16_t d; uint8_t qs[QK / 2]; };
struct BlockIQ4_XS { uint16_t d; uint16_t scales_h; uint8_t scales_l[QK_K / 64]; uint8_t qs[QK_K / 2]; };
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24 &&
              sizeof(BlockQ8_0) == 34, "ggml-common.h legacy block sizes");
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 &&
              sizeof(BlockQ6_K) == 210, "ggml-common.h k-quant block sizes");
static_assert(sizeof(BlockIQ4_NL) == 18 && sizeof(BlockIQ4_XS) == 136, "ggml-common.h iq4 block sizes");

// ggml-common.h kvalues_iq4nl: IQ4's non-uniform levels.
constexpr int8_t kIq4Levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

uint16_t BF16Of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);  // round to nearest even
}

// 4-bit codes of a 32-value run: element j in the low nibble of qs[j], j + 16 in the high one.
void PutNibbles32(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>((q[j] & 15) | ((q[j + 16] & 15) << 4));
}
void GetNibbles32(const uint8_t* qs, uint8_t* q) {
  for (int j = 0; j < 16; ++j) q[j] = qs[j] & 15, q[j + 16] = qs[j] >> 4;
}
// The fifth bits of a 32-value run (Q5_0, Q5_1): bit j of qh.
void PutHighBits32(const uint8_t* q, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < 32; ++j) h |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  std::memcpy(qh, &h, 4);
}
void GetHighBits32(const uint8_t* qh, uint8_t* q) {
  uint32_t h;
  std::memcpy(&h, qh, 4);
  for (int j = 0; j < 32; ++j) q[j] |= static_cast<uint8_t>(((h >> j) & 1) << 4);
}
// K-quants' 2-bit planes (Q2_K, Q3_K's low bits): element e in qs[(e/128)·32 + e%32] at bit 2·((e%128)/32).
int PlaneByte2(int e) { return (e / 128) * 32 + e % 32; }
int PlaneShift2(int e) { return 2 * ((e % 128) / 32); }
// Q4_K/Q5_K's nibbles: element e in qs[(e/64)·32 + e%32], low nibble for the first 32 of each 64.
int NibbleByteK(int e) { return (e / 64) * 32 + e % 32; }
int NibbleShiftK(int e) { return 4 * ((e % 64) / 32); }

// Q4_K/Q5_K's 12 bytes of eight 6-bit scales and mins (get_scale_min_k4 read backwards).
void PutScaleMinK4(const GgmlBlock& b, uint8_t* q) {
  std::memset(q, 0, K_SCALE_SIZE);
  for (int j = 0; j < 8; ++j) {
    const int sc = b.scale[j] & 63, m = b.min[j] & 63;
    if (j < 4) {
      q[j] |= static_cast<uint8_t>(sc), q[j + 4] |= static_cast<uint8_t>(m);
    } else {
      q[j + 4] = static_cast<uint8_t>((sc & 15) | ((m & 15) << 4));
      q[j - 4] |= static_cast<uint8_t>((sc >> 4) << 6);
      q[j] |= static_cast<uint8_t>((m >> 4) << 6);
    }
  }
}
void GetScaleMinK4(const uint8_t* q, GgmlBlock* b) {
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      b->scale[j] = q[j] & 63, b->min[j] = q[j + 4] & 63;
    } else {
      b->scale[j] = static_cast<int16_t>((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4));
      b->min[j] = static_cast<int16_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
  }
}

float F16At(uint16_t h) { return F16ToF32(h); }

}  // namespace

const std::vector<GgmlTypeTraits>& GgmlTypes() {
  // {sub_block, levels, zero, table, scale_min, scale_max, min_max, free_min}
  static const std::vector<GgmlTypeTraits> types = {
      {GgmlType::kF32, "F32", 1, 4, {}},
      {GgmlType::kF16, "F16", 1, 2, {}},
      {GgmlType::kBF16, "BF16", 1, 2, {}},
      {GgmlType::kQ8_0, "Q8_0", QK, sizeof(BlockQ8_0), {QK, 256, 128, nullptr, 1, 1, 0, false}},
      {GgmlType::kQ4_0, "Q4_0", QK, sizeof(BlockQ4_0), {QK, 16, 8, nullptr, 1, 1, 0, false}},
      {GgmlType::kQ4_1, "Q4_1", QK, sizeof(BlockQ4_1), {QK, 16, 0, nullptr, 1, 1, 1, true}},
      {GgmlType::kQ5_0, "Q5_0", QK, sizeof(BlockQ5_0), {QK, 32, 16, nullptr, 1, 1, 0, false}},
      {GgmlType::kQ5_1, "Q5_1", QK, sizeof(BlockQ5_1), {QK, 32, 0, nullptr, 1, 1, 1, true}},
      {GgmlType::kQ2_K, "Q2_K", QK_K, sizeof(BlockQ2_K), {16, 4, 0, nullptr, 0, 15, 15, false}},
      {GgmlType::kQ3_K, "Q3_K", QK_K, sizeof(BlockQ3_K), {16, 8, 4, nullptr, -32, 31, 0, false}},
      {GgmlType::kQ4_K, "Q4_K", QK_K, sizeof(BlockQ4_K), {32, 16, 0, nullptr, 0, 63, 63, false}},
      {GgmlType::kQ5_K, "Q5_K", QK_K, sizeof(BlockQ5_K), {32, 32, 0, nullptr, 0, 63, 63, false}},
      {GgmlType::kQ6_K, "Q6_K", QK_K, sizeof(BlockQ6_K), {16, 64, 32, nullptr, -128, 127, 0, false}},
      {GgmlType::kIQ4_NL, "IQ4_NL", QK, sizeof(BlockIQ4_NL), {QK, 16, 0, kIq4Levels, 1, 1, 0, false}},
      {GgmlType::kIQ4_XS, "IQ4_XS", QK_K, sizeof(BlockIQ4_XS), {32, 16, 0, kIq4Levels, -32, 31, 0, false}},
  };
  return types;
}

const GgmlTypeTraits* FindGgmlType(absl::string_view name) {
  for (const GgmlTypeTraits& t : GgmlTypes()) {
    if (absl::EqualsIgnoreCase(t.name, name)) return &t;
  }
  return nullptr;
}

const GgmlTypeTraits* FindGgmlType(GgmlType type) {
  for (const GgmlTypeTraits& t : GgmlTypes()) {
    if (t.type == type) return &t;
  }
  return nullptr;
}

const GgmlTypeTraits& TraitsOf(GgmlType type) { return *FindGgmlType(type); }

void PackGgmlBlock(const GgmlTypeTraits& t, const GgmlBlock& b, uint8_t* out) {
  const uint16_t d = F32ToF16(b.d), dmin = F32ToF16(b.dmin), m = F32ToF16(-b.dmin);
  switch (t.type) {
    case GgmlType::kQ8_0: {
      BlockQ8_0 x{d, {}};
      for (int j = 0; j < QK; ++j) x.qs[j] = static_cast<int8_t>(b.q[j] - 128);
      std::memcpy(out, &x, sizeof(x));
      return;
    }
    case GgmlType::kQ4_0: {
      BlockQ4_0 x{d, {}};
      PutNibbles32(b.q, x.qs);
      std::memcpy(out, &x, sizeof(x));
      return;
    }
    case GgmlType::kQ4_1: {
      BlockQ4_1 x{d, m, {}};
      PutNibbles32(b.q, x.qs);
      std::memcpy(out, &x, sizeof(x));
      return;
    }
    case GgmlType::kQ5_0: {
      BlockQ5_0 x{d, {}, {}};
      PutHighBits32(b.q, x.qh);
      PutNibbles32(b.q, x.qs);
      std::memcpy(out, &x, sizeof(x));
      return;
    }
    case GgmlType::kQ5_1: {
      BlockQ5_1 x{d, m, {}, {}};
      PutHighBits32(b.q, x.qh);
      PutNibbles32(b.q, x.qs);
      std::memcpy(out, &x, sizeof(x));
      return;
    }
    case GgmlType::kIQ4_NL: {
      BlockIQ4_NL x{d, {}};
      PutNibbles32(b.q, x.qs);
      std::memcpy(out, &x, sizeof(x));
      return;
    }
    case GgmlType::kQ2_K: {
      BlockQ2_K x{};
      for (int s = 0; s < 16; ++s) x.scales[s] = static_cast<uint8_t>((b.scale[s] & 15) | ((b.min[s] & 15) << 4));
      for (int e = 0; e < QK_K; ++e) x.qs[PlaneByte2(e)] |= static_cast<uint8_t>((b.q[e] & 3) << PlaneShift2(e));
      x.d = d, x.dmin = dmin;
      std::memcpy(out, &x, sizeof(x));
      return;
    }
    case GgmlType::kQ3_K: {
      BlockQ3_K x{};
      for (int e = 0; e < QK_K; ++e) {
        x.qs[PlaneByte2(e)] |= static_cast<uint8_t>((b.q[e] & 3) << PlaneShift2(e));
        // The third bit: hmask[e % 32], bit (e/128)·4 + (e%128)/32.
        x.hmask[e % 32] |= static_cast<uint8_t>(((b.q[e] >> 2) & 1) << ((e / 128) * 4 + (e % 128) / 32));
      }
      for (int s = 0; s < 16; ++s) {  // sixteen 6-bit scales stored as scale + 32
        const int l = (b.scale[s] + 32) & 63;
        x.scales[s % 8] |= static_cast<uint8_t>((l & 15) << (s < 8 ? 0 : 4));
        x.scales[8 + s % 4] |= static_cast<uint8_t>((l >> 4) << (2 * (s / 4)));
      }
      x.d = d;
      std::memcpy(out, &x, sizeof(x));
      return;
    }
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K: {
      uint8_t scales[K_SCALE_SIZE], qs[QK_K / 2] = {}, qh[QK_K / 8] = {};
      PutScaleMinK4(b, scales);
      for (int e = 0; e < QK_K; ++e) {
        qs[NibbleByteK(e)] |= static_cast<uint8_t>((b.q[e] & 15) << NibbleShiftK(e));
        qh[e % 32] |= static_cast<uint8_t>(((b.q[e] >> 4) & 1) << (e / 32));
      }
      if (t.type == GgmlType::kQ4_K) {
        BlockQ4_K x{d, dmin, {}, {}};
        std::memcpy(x.scales, scales, sizeof(scales));
        std::memcpy(x.qs, qs, sizeof(qs));
        std::memcpy(out, &x, sizeof(x));
      } else {
        BlockQ5_K x{d, dmin, {}, {}, {}};
        std::memcpy(x.scales, scales, sizeof(scales));
        std::memcpy(x.qh, qh, sizeof(qh));
        std::memcpy(x.qs, qs, sizeof(qs));
        std::memcpy(out, &x, sizeof(x));
      }
      return;
    }
    case GgmlType::kQ6_K: {
      BlockQ6_K x{};
      for (int e = 0; e < QK_K; ++e) {
        // Element e = 128n + 32·quarter + l: low nibble in ql[64n + l + 32·(quarter & 1)] (high half for
        // quarters 2, 3), top two bits in qh[32n + l] at bit 2·quarter.
        const int n = e / 128, quarter = (e % 128) / 32, l = e % 32;
        x.ql[64 * n + l + 32 * (quarter & 1)] |= static_cast<uint8_t>((b.q[e] & 15) << (4 * (quarter / 2)));
        x.qh[32 * n + l] |= static_cast<uint8_t>(((b.q[e] >> 4) & 3) << (2 * quarter));
      }
      for (int s = 0; s < 16; ++s) x.scales[s] = static_cast<int8_t>(b.scale[s]);
      x.d = d;
      std::memcpy(out, &x, sizeof(x));
      return;
    }
    case GgmlType::kIQ4_XS: {
      BlockIQ4_XS x{d, 0, {}, {}};
      for (int s = 0; s < 8; ++s) {
        const int l = (b.scale[s] + 32) & 63;
        x.scales_l[s / 2] |= static_cast<uint8_t>((l & 15) << (4 * (s % 2)));
        x.scales_h |= static_cast<uint16_t>((l >> 4) << (2 * s));
        PutNibbles32(b.q + 32 * s, x.qs + 16 * s);
      }
      std::memcpy(out, &x, sizeof(x));
      return;
    }
    default:
      return;
  }
}

void UnpackGgmlBlock(const GgmlTypeTraits& t, const uint8_t* in, GgmlBlock* b) {
  *b = GgmlBlock{};
  auto one_scale = [&](uint16_t d) {
    b->d = F16At(d);
    b->scale[0] = 1;
  };
  switch (t.type) {
    case GgmlType::kQ8_0: {
      BlockQ8_0 x;
      std::memcpy(&x, in, sizeof(x));
      one_scale(x.d);
      for (int j = 0; j < QK; ++j) b->q[j] = static_cast<uint8_t>(x.qs[j] + 128);
      return;
    }
    case GgmlType::kQ4_0:
    case GgmlType::kIQ4_NL: {
      BlockQ4_0 x;  // IQ4_NL has Q4_0's layout
      std::memcpy(&x, in, sizeof(x));
      one_scale(x.d);
      GetNibbles32(x.qs, b->q);
      return;
    }
    case GgmlType::kQ4_1: {
      BlockQ4_1 x;
      std::memcpy(&x, in, sizeof(x));
      one_scale(x.d);
      b->dmin = -F16At(x.m), b->min[0] = 1;
      GetNibbles32(x.qs, b->q);
      return;
    }
    case GgmlType::kQ5_0: {
      BlockQ5_0 x;
      std::memcpy(&x, in, sizeof(x));
      one_scale(x.d);
      GetNibbles32(x.qs, b->q);
      GetHighBits32(x.qh, b->q);
      return;
    }
    case GgmlType::kQ5_1: {
      BlockQ5_1 x;
      std::memcpy(&x, in, sizeof(x));
      one_scale(x.d);
      b->dmin = -F16At(x.m), b->min[0] = 1;
      GetNibbles32(x.qs, b->q);
      GetHighBits32(x.qh, b->q);
      return;
    }
    case GgmlType::kQ2_K: {
      BlockQ2_K x;
      std::memcpy(&x, in, sizeof(x));
      b->d = F16At(x.d), b->dmin = F16At(x.dmin);
      for (int s = 0; s < 16; ++s) b->scale[s] = x.scales[s] & 15, b->min[s] = x.scales[s] >> 4;
      for (int e = 0; e < QK_K; ++e) b->q[e] = (x.qs[PlaneByte2(e)] >> PlaneShift2(e)) & 3;
      return;
    }
    case GgmlType::kQ3_K: {
      BlockQ3_K x;
      std::memcpy(&x, in, sizeof(x));
      b->d = F16At(x.d);
      for (int s = 0; s < 16; ++s) {
        const int l = ((x.scales[s % 8] >> (s < 8 ? 0 : 4)) & 15) | (((x.scales[8 + s % 4] >> (2 * (s / 4))) & 3) << 4);
        b->scale[s] = static_cast<int16_t>(l - 32);
      }
      for (int e = 0; e < QK_K; ++e) {
        const int high = (x.hmask[e % 32] >> ((e / 128) * 4 + (e % 128) / 32)) & 1;
        b->q[e] = static_cast<uint8_t>(((x.qs[PlaneByte2(e)] >> PlaneShift2(e)) & 3) | (high << 2));
      }
      return;
    }
    case GgmlType::kQ4_K:
    case GgmlType::kQ5_K: {
      const bool five = t.type == GgmlType::kQ5_K;
      uint16_t d, dmin;
      std::memcpy(&d, in, 2);
      std::memcpy(&dmin, in + 2, 2);
      b->d = F16At(d), b->dmin = F16At(dmin);
      GetScaleMinK4(in + 4, b);
      const uint8_t* qh = in + 4 + K_SCALE_SIZE;
      const uint8_t* qs = five ? qh + QK_K / 8 : qh;
      for (int e = 0; e < QK_K; ++e) {
        b->q[e] = static_cast<uint8_t>((qs[NibbleByteK(e)] >> NibbleShiftK(e)) & 15);
        if (five) b->q[e] |= static_cast<uint8_t>(((qh[e % 32] >> (e / 32)) & 1) << 4);
      }
      return;
    }
    case GgmlType::kQ6_K: {
      BlockQ6_K x;
      std::memcpy(&x, in, sizeof(x));
      b->d = F16At(x.d);
      for (int s = 0; s < 16; ++s) b->scale[s] = x.scales[s];
      for (int e = 0; e < QK_K; ++e) {
        const int n = e / 128, quarter = (e % 128) / 32, l = e % 32;
        const int low = (x.ql[64 * n + l + 32 * (quarter & 1)] >> (4 * (quarter / 2))) & 15;
        b->q[e] = static_cast<uint8_t>(low | (((x.qh[32 * n + l] >> (2 * quarter)) & 3) << 4));
      }
      return;
    }
    case GgmlType::kIQ4_XS: {
      BlockIQ4_XS x;
      std::memcpy(&x, in, sizeof(x));
      b->d = F16At(x.d);
      for (int s = 0; s < 8; ++s) {
        const int l = ((x.scales_l[s / 2] >> (4 * (s % 2))) & 15) | (((x.scales_h >> (2 * s)) & 3) << 4);
        b->scale[s] = static_cast<int16_t>(l - 32);
        GetNibbles32(x.qs + 16 * s, b->q + 32 * s);
      }
      return;
    }
    default:
      return;
  }
}

std::string EncodeFloatRows(const float* values, int64_t rows, int64_t cols, GgmlType type,
                            const std::vector<int64_t>& row_order) {
  const GgmlTypeTraits& t = TraitsOf(type);
  std::string out(static_cast<size_t>(rows * cols) * t.block_bytes, '\0');
  char* p = out.data();
  for (int64_t i = 0; i < rows; ++i) {
    const float* row = values + (row_order.empty() ? i : row_order[static_cast<size_t>(i)]) * cols;
    for (int64_t c = 0; c < cols; ++c, p += t.block_bytes) {
      if (type == GgmlType::kF32) {
        std::memcpy(p, &row[c], 4);
      } else {
        const uint16_t h = type == GgmlType::kF16 ? F32ToF16(row[c]) : BF16Of(row[c]);
        std::memcpy(p, &h, 2);
      }
    }
  }
  return out;
}

void DequantizeGgmlRow(GgmlType type, const char* data, int64_t n, float* out) {
  const GgmlTypeTraits& t = TraitsOf(type);
  const uint8_t* p = reinterpret_cast<const uint8_t*>(data);
  if (!t.quantized()) {
    for (int64_t i = 0; i < n; ++i) {
      if (type == GgmlType::kF32) {
        std::memcpy(&out[i], p + 4 * i, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        if (type == GgmlType::kF16) {
          out[i] = F16ToF32(h);
        } else {
          const uint32_t u = static_cast<uint32_t>(h) << 16;
          std::memcpy(&out[i], &u, 4);
        }
      }
    }
    return;
  }
  GgmlBlock b;
  for (int64_t at = 0; at < n; at += t.block_size, p += t.block_bytes) {
    UnpackGgmlBlock(t, p, &b);
    for (int j = 0; j < t.block_size; ++j) out[at + j] = b.value(t.grid, j);
  }
}

}  // namespace lowbit
