// The block-wise calibrator against a reference pipeline written independently in double precision from
// HF's modeling_llama.py and the GPTQ papers: for each block and each linear group in true-sequential
// order, the group's inputs are recomputed over all windows through the block as quantized so far, H is
// summed directly, and the column-by-column reference GPTQ quantizes the group; the hidden states then
// advance through the quantized block. On the real stories260K, lowbit's codes must be the reference's.
// The layers quantized so far are lowbit's own (dequantized): a code that float32 and float64 round
// differently would otherwise change every later input, and GPTQ's error feedback amplifies such changes
// (seen: one flip in block 2 dropped block 4's agreement to 80%). Any difference in what the pipeline
// feeds a group — the order, the quantized predecessors, the advance, H — still shows.
#include "core/runtime/block_calibrator.h"

#include <atomic>
#include <cmath>
#include <map>
#include <mutex>

#include "gtest/gtest.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/quant/quantizer.h"
#include "core/quant/rtn.h"
#include "core/storage/local_object_store.h"
#include "core/util/status_macros.h"
#include "tests/test_util/reference_gptq.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit {
namespace {

using Rows = std::vector<std::vector<double>>;  // one vector per token

Rows Linear(const Rows& x, const Matrix& w) {
  Rows y(x.size(), std::vector<double>(static_cast<size_t>(w.rows)));
  for (size_t t = 0; t < x.size(); ++t)
    for (int64_t r = 0; r < w.rows; ++r) {
      double s = 0;
      for (int64_t c = 0; c < w.cols; ++c) s += w.row(r)[c] * x[t][c];
      y[t][r] = s;
    }
  return y;
}

Rows RmsNorm(const Rows& x, const std::vector<float>& weight, double eps) {
  Rows y = x;
  for (auto& row : y) {
    double ss = 0;
    for (double v : row) ss += v * v;
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(row.size()) + eps);
    for (size_t i = 0; i < row.size(); ++i) row[i] *= scale * weight[i];
  }
  return y;
}

// modeling_llama.py: rotate_half RoPE, repeat_kv, causal softmax(QKᵀ/√d)V, per window of `len` tokens.
Rows Attention(const BlockGeometry& g, const Rows& xn, const BlockWeights& w, int64_t len) {
  Rows q = Linear(xn, w.q), k = Linear(xn, w.k), v = Linear(xn, w.v);
  const int64_t hd = g.head_dim, half = hd / 2;
  for (size_t t = 0; t < xn.size(); ++t) {
    const double pos = static_cast<double>(static_cast<int64_t>(t) % len);
    auto rope = [&](std::vector<double>& x, int64_t heads) {
      for (int64_t h = 0; h < heads; ++h)
        for (int64_t i = 0; i < half; ++i) {
          const double angle = pos / std::pow(g.rope.theta, 2.0 * static_cast<double>(i) / static_cast<double>(hd));
          const double a = x[h * hd + i], b = x[h * hd + i + half];
          x[h * hd + i] = a * std::cos(angle) - b * std::sin(angle);
          x[h * hd + i + half] = b * std::cos(angle) + a * std::sin(angle);
        }
    };
    rope(q[t], g.heads);
    rope(k[t], g.kv_heads);
  }
  Rows out(xn.size(), std::vector<double>(static_cast<size_t>(g.q_dim()), 0.0));
  for (size_t t = 0; t < xn.size(); ++t) {
    const size_t first = t - static_cast<size_t>(static_cast<int64_t>(t) % len);
    for (int64_t h = 0; h < g.heads; ++h) {
      const int64_t kvh = h / (g.heads / g.kv_heads);
      std::vector<double> s;
      for (size_t j = first; j <= t; ++j) {
        double d = 0;
        for (int64_t i = 0; i < hd; ++i) d += q[t][h * hd + i] * k[j][kvh * hd + i];
        s.push_back(d / std::sqrt(static_cast<double>(hd)));
      }
      const double m = *std::max_element(s.begin(), s.end());
      double sum = 0;
      for (double& e : s) sum += (e = std::exp(e - m));
      for (size_t j = first; j <= t; ++j)
        for (int64_t i = 0; i < hd; ++i) out[t][h * hd + i] += s[j - first] / sum * v[j][kvh * hd + i];
    }
  }
  return out;
}

Rows Add(Rows a, const Rows& b) {
  for (size_t t = 0; t < a.size(); ++t)
    for (size_t i = 0; i < a[t].size(); ++i) a[t][i] += b[t][i];
  return a;
}

// The four linear inputs and the output of the block as its weights are now.
struct Pass {
  Rows qkv, o, gate_up, down, out;
};
Pass Forward(const BlockGeometry& g, const BlockWeights& w, const Rows& x, int64_t len) {
  Pass p;
  p.qkv = RmsNorm(x, w.attn_norm, g.eps);
  p.o = Attention(g, p.qkv, w, len);
  const Rows h = Add(x, Linear(p.o, w.o));
  p.gate_up = RmsNorm(h, w.ffn_norm, g.eps);
  Rows gate = Linear(p.gate_up, w.gate);
  const Rows up = Linear(p.gate_up, w.up);
  for (size_t t = 0; t < gate.size(); ++t)
    for (size_t i = 0; i < gate[t].size(); ++i) gate[t][i] = gate[t][i] / (1 + std::exp(-gate[t][i])) * up[t][i];
  p.down = gate;
  p.out = Add(h, Linear(p.down, w.down));
  return p;
}

// `count` windows of `len` tokens, BOS first, then (w·a + t·b + c) mod 512.
std::vector<std::vector<int>> Windows(size_t count, int64_t len, size_t a, size_t b, size_t c) {
  std::vector<std::vector<int>> windows(count);
  for (size_t w = 0; w < count; ++w) {
    windows[w].push_back(1);
    for (int64_t t = 1; t < len; ++t) windows[w].push_back(static_cast<int>((w * a + static_cast<size_t>(t) * b + c) % 512));
  }
  return windows;
}

// The windows' embeddings, token by token: the hidden states entering block 0.
Rows EmbeddedRows(const CheckpointReader& reader, const Architecture& arch, const BlockGeometry& g,
                  const std::vector<std::vector<int>>& windows) {
  Rows x;
  for (const auto& w : windows) {
    const Matrix e = *Embed(reader, arch, g, w);
    for (int64_t t = 0; t < e.rows; ++t) x.emplace_back(e.row(t), e.row(t) + e.cols);
  }
  return x;
}

CalibrationStats DirectHessian(const Rows& x) {
  const size_t n = x[0].size();
  CalibrationStats stats;
  stats.cols = static_cast<int64_t>(n);
  stats.samples = static_cast<int64_t>(x.size());
  stats.hessian.assign(n * n, 0.0f);
  for (size_t i = 0; i < n; ++i)
    for (size_t j = 0; j < n; ++j) {
      double s = 0;
      for (const auto& row : x) s += row[i] * row[j];
      stats.hessian[i * n + j] = static_cast<float>(2 * s / static_cast<double>(x.size()));
    }
  return stats;
}

TEST(BlockCalibratorTest, GptqCodesMatchTheDoublePrecisionReferencePipeline) {
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = *OpenCheckpoint(store.get(), testing::SharedData("models/stories260K/stories260K.bin"));
  // More tokens than down_proj's 172 inputs, so every H is well conditioned and tiny float-vs-double
  // differences cannot be amplified into different codes.
  const int64_t len = 32;
  const std::vector<std::vector<int>> windows = Windows(16, len, 131, 57, 3);
  BlockCalibratorOptions o;
  o.include = [](const std::string&) { return true; };
  o.quantize = [](const std::string&, const Matrix& w, const CalibrationStats& stats,
                  const JobContext* context) -> absl::StatusOr<CalibratedLayer> {
    ASSIGN_OR_RETURN(GptqResult r, QuantizeGptq(w, stats, {4, 32, false, 0.01, false, false, 128}, context));
    return CalibratedLayer{std::move(r.layer), "", std::nullopt, 0};
  };
  o.rows_per_chunk = 100;  // several chunks of whole windows
  ThreadPool pool(2);
  o.pool = &pool;
  auto calibrator = *BlockCalibrator::Create(*reader, windows, o);

  const Architecture& arch = *FindArchitecture("LlamaForCausalLM");
  const BlockGeometry g = *BlockGeometry::Of(reader->descriptor());
  Rows x = EmbeddedRows(*reader, arch, g, windows);
  double agreement_sum = 0;
  int layers = 0;
  for (int b = 0; b < g.layers; ++b) {
    auto ours = calibrator->Next();
    ASSERT_TRUE(ours.ok()) << ours.status();
    BlockWeights w = *ReadBlock(*reader, arch, g, b);
    for (const LinearGroup& group : arch.groups) {
      const Pass pass = Forward(g, w, x, len);
      const Rows& input = group.input == LinearInput::kQkv ? pass.qkv
                          : group.input == LinearInput::kO ? pass.o
                          : group.input == LinearInput::kGateUp ? pass.gate_up : pass.down;
      const CalibrationStats stats = DirectHessian(input);
      for (const std::string& name : group.linears) {
        Matrix* m = w.Linear(name);
        const QuantizedTensor ref = testing::ReferenceGptq(*m, stats, 4, 32, false);
        const std::string full = arch.BlockPrefix(b) + name;
        ASSERT_TRUE(ours->layers.count(full)) << full;
        const double agreement = testing::CodeAgreement(std::get<QuantizedTensor>(ours->layers.at(full).tensor), ref);
        EXPECT_GE(agreement, 0.999) << full;
        agreement_sum += agreement;
        ++layers;
        *m = Dequantize(ours->layers.at(full).tensor);  // later groups and blocks see lowbit's quantization
      }
    }
    x = Forward(g, w, x, len).out;
  }
  EXPECT_EQ(layers, 35);
  EXPECT_GE(agreement_sum / layers, 0.9995) << "mean code agreement";
}

// Measurement mode: every task of every layer runs once, on the statistics of the float model's inputs
// (the reference pipeline with nothing quantized), and the hidden states advance through the float blocks.
TEST(BlockCalibratorTest, MeasureModeSeesTheFloatModel) {
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = *OpenCheckpoint(store.get(), testing::SharedData("models/stories260K/stories260K.bin"));
  const int64_t len = 24;
  const std::vector<std::vector<int>> windows = Windows(12, len, 97, 31, 5);
  std::mutex mu;
  std::map<std::string, CalibrationStats> seen;
  std::map<std::string, int> calls;
  BlockCalibratorOptions o;
  o.mode = BlockCalibratorOptions::Mode::kMeasure;
  o.include = [](const std::string&) { return true; };
  o.measure_tasks = 3;
  o.measure = [&](const std::string& name, const Matrix&, const CalibrationStats& stats, int task, const JobContext*) {
    std::lock_guard<std::mutex> lock(mu);
    calls[name] += 1 << (4 * task);
    seen[name] = stats;
    return absl::OkStatus();
  };
  o.rows_per_chunk = 60;
  ThreadPool pool(2);
  o.pool = &pool;
  auto calibrator = *BlockCalibrator::Create(*reader, windows, o);
  const Architecture& arch = *FindArchitecture("LlamaForCausalLM");
  const BlockGeometry g = *BlockGeometry::Of(reader->descriptor());
  Rows x = EmbeddedRows(*reader, arch, g, windows);
  for (int b = 0; b < g.layers; ++b) {
    auto ours = calibrator->Next();
    ASSERT_TRUE(ours.ok()) << ours.status();
    EXPECT_TRUE(ours->layers.empty());
    const BlockWeights w = *ReadBlock(*reader, arch, g, b);
    const Pass pass = Forward(g, w, x, len);
    for (const LinearGroup& group : arch.groups) {
      const Rows& input = group.input == LinearInput::kQkv ? pass.qkv
                          : group.input == LinearInput::kO ? pass.o
                          : group.input == LinearInput::kGateUp ? pass.gate_up : pass.down;
      const CalibrationStats ref = DirectHessian(input);
      for (const std::string& name : group.linears) {
        const std::string full = arch.BlockPrefix(b) + name;
        EXPECT_EQ(calls[full], 0x111) << full << ": each of the three tasks once";
        const CalibrationStats& s = seen[full];
        ASSERT_EQ(s.hessian.size(), ref.hessian.size()) << full;
        double diff = 0, norm = 0;
        for (size_t i = 0; i < s.hessian.size(); ++i) {
          diff += std::pow(s.hessian[i] - ref.hessian[i], 2);
          norm += std::pow(ref.hessian[i], 2);
        }
        EXPECT_LT(std::sqrt(diff / norm), 1e-4) << full << ": H of the float model's inputs";
      }
    }
    x = pass.out;
  }
  const Matrix& h = calibrator->hidden_states();
  double diff = 0, norm = 0;
  for (int64_t t = 0; t < h.rows; ++t)
    for (int64_t c = 0; c < h.cols; ++c) {
      diff += std::pow(h.row(t)[c] - x[t][c], 2);
      norm += x[t][c] * x[t][c];
    }
  EXPECT_LT(std::sqrt(diff / norm), 1e-4) << "the hidden states after the float model's last block";
}

// A context that cancels once calibration reaches `block`.
class CancelAtBlock final : public JobContext {
 public:
  explicit CancelAtBlock(int block) : block_(block) {}
  absl::Status CheckCancelled() const override {
    return reached_ >= block_ ? absl::CancelledError("cancelled by the test") : absl::OkStatus();
  }
  void Progress(const JobProgress& p) override {
    if (p.phase == JobPhase::kCalibrating) reached_ = std::max<int>(reached_, static_cast<int>(p.done));
  }
  std::atomic<int> reached_{-1};

 private:
  const int block_;
};

// gptq, vq (sequential) and awq stop inside the block where the cancel arrives, and go no further.
TEST(BlockCalibratorTest, CancellationTakesEffectWithinTheBlock) {
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = *OpenCheckpoint(store.get(), testing::SharedData("models/stories260K/stories260K.bin"));
  const std::vector<std::vector<int>> windows(4, std::vector<int>{1, 50, 60, 70, 80, 90, 100, 110});
  for (Method method : {Method::kGptq, Method::kVq, Method::kAwq}) {
    QuantConfig config;
    config.method = method;
    config.group_size = 32;
    auto quantizer = *CreateQuantizer(config);
    BlockCalibratorOptions o;
    o.include = [](const std::string&) { return true; };
    o.mode = method == Method::kAwq ? BlockCalibratorOptions::Mode::kAwq : BlockCalibratorOptions::Mode::kSequential;
    o.awq = AwqOptionsOf(config);
    o.quantize = [&](const std::string&, const Matrix& w, const CalibrationStats& stats,
                     const JobContext* context) -> absl::StatusOr<CalibratedLayer> {
      ASSIGN_OR_RETURN(QuantizedLayer q, quantizer->Quantize(w, &stats, context));
      return CalibratedLayer{std::move(q), "", std::nullopt, 0};
    };
    CancelAtBlock context(1);
    o.context = &context;
    auto calibrator = *BlockCalibrator::Create(*reader, windows, o);
    auto first = calibrator->Next();
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->layers.size(), 7u) << MethodName(method);
    auto second = calibrator->Next();
    EXPECT_EQ(second.status().code(), absl::StatusCode::kCancelled) << MethodName(method);
    EXPECT_EQ(context.reached_, 1) << MethodName(method) << ": no later block was started";
  }
}

// A method that never looks at the context (plain RTN): only the calibrator's own checks, per block and
// per row chunk, can stop it — and must, inside the block where the cancel arrives.
TEST(BlockCalibratorTest, CalibratorChecksCancellationItselfBetweenChunks) {
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = *OpenCheckpoint(store.get(), testing::SharedData("models/stories260K/stories260K.bin"));
  const std::vector<std::vector<int>> windows(4, std::vector<int>{1, 50, 60, 70, 80, 90, 100, 110});
  BlockCalibratorOptions o;
  o.include = [](const std::string&) { return true; };
  o.quantize = [](const std::string&, const Matrix& w, const CalibrationStats&,
                  const JobContext*) -> absl::StatusOr<CalibratedLayer> {
    ASSIGN_OR_RETURN(QuantizedTensor q, QuantizeRtn(w, {4, 32, GridKind::kAsymmetric, false}));
    return CalibratedLayer{std::move(q), "", std::nullopt, 0};
  };
  o.rows_per_chunk = 8;
  CancelAtBlock context(1);
  o.context = &context;
  auto calibrator = *BlockCalibrator::Create(*reader, windows, o);
  ASSERT_TRUE(calibrator->Next().ok());
  EXPECT_EQ(calibrator->Next().status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(calibrator->next_block(), 1) << "the cancelled block is not counted as done";
}

TEST(BlockCalibratorTest, RefusesArchitecturesOutsideTheTable) {
  ModelDescriptor d;
  d.architecture = "GPTNeoXForCausalLM";
  EXPECT_EQ(ArchitectureOf(d).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_NE(ArchitectureOf(d).status().message().find("GPTNeoXForCausalLM"), std::string::npos);
}

}  // namespace
}  // namespace lowbit
