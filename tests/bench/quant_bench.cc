// Throughput of the hot paths on a 4096x4096 BF16 matrix (a Llama-2-7B attention projection), each
// reported as bytes of input per second beside a memcpy of the same bytes in the same run.
#include <cstdlib>
#include <cstring>
#include <random>

#include "benchmark/benchmark.h"
#include <cblas.h>

#include "core/pack/gptq.h"
#include "core/checkpoint/checkpoint_reader.h"
#include "core/quant/ggml_grid.h"
#include "core/quant/gptq.h"
#include "core/quant/lut.h"
#include "core/quant/onebit.h"
#include "core/quant/vq.h"
#include "core/runtime/llama_model.h"
#include "core/storage/local_object_store.h"
#include "core/quant/rtn.h"
#include "core/tensor/dtype.h"
#include "core/util/memory.h"

namespace lowbit {
namespace {

constexpr int64_t kRows = 4096, kCols = 4096;

const std::vector<uint16_t>& Bf16Weights() {
  static const std::vector<uint16_t> weights = [] {
    std::mt19937 rng(1);
    std::student_t_distribution<float> t(4.0f);
    std::vector<uint16_t> w(kRows * kCols);
    for (uint16_t& v : w) v = F32ToBf16(0.02f * t(rng));
    return w;
  }();
  return weights;
}

void BM_Memcpy(benchmark::State& state) {
  const auto& src = Bf16Weights();
  std::vector<uint16_t> dst(src.size());
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size() * 2);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(src.size() * 2));
}
BENCHMARK(BM_Memcpy)->Unit(benchmark::kMillisecond);

void BM_Bf16ToF32(benchmark::State& state) {
  const auto& src = Bf16Weights();
  std::vector<float> dst(src.size());
  for (auto _ : state) {
    ConvertToF32(DType::kBF16, src.data(), src.size(), dst.data());
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(src.size() * 2));
}
BENCHMARK(BM_Bf16ToF32)->Unit(benchmark::kMillisecond);

void BM_F16ToF32(benchmark::State& state) {
  const auto& src = Bf16Weights();  // any 16-bit patterns; the cost of the subnormal path shows too
  std::vector<float> dst(src.size());
  for (auto _ : state) {
    ConvertToF32(DType::kF16, src.data(), src.size(), dst.data());
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(src.size() * 2));
}
BENCHMARK(BM_F16ToF32)->Unit(benchmark::kMillisecond);

void BM_F32ToF16(benchmark::State& state) {
  std::vector<float> src(Bf16Weights().size());
  ConvertToF32(DType::kBF16, Bf16Weights().data(), src.size(), src.data());
  std::vector<uint16_t> dst(src.size());
  for (auto _ : state) {
    ConvertFromF32(DType::kF16, src.data(), src.size(), dst.data());
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(src.size() * 4));
}
BENCHMARK(BM_F32ToF16)->Unit(benchmark::kMillisecond);

// The whole per-layer path of an RTN job: widen BF16, quantize 4-bit g128, pack to the GPTQ layout.
void BM_Rtn4bitG128WithPacking(benchmark::State& state) {
  const auto& src = Bf16Weights();
  for (auto _ : state) {
    Matrix w{kRows, kCols, std::vector<float>(src.size())};
    ConvertToF32(DType::kBF16, src.data(), src.size(), w.data.data());
    auto q = QuantizeRtn(w, {4, 128, GridKind::kAsymmetric, false});
    auto packed = PackGptq("layer", *q, GptqZerosFor(q->symmetric));
    benchmark::DoNotOptimize(packed);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(src.size() * 2));
}
BENCHMARK(BM_Rtn4bitG128WithPacking)->Unit(benchmark::kMillisecond);

// GPTQ's cost is BLAS-shaped (a Cholesky inverse of H and rank-128 updates), so it is reported beside
// sgemm on the same matrices in the same run.
void BM_Sgemm4096(benchmark::State& state) {
  const int n = 4096;
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a), c(a.size());
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Sgemm4096)->Unit(benchmark::kMillisecond)->UseRealTime();

const CalibrationStats& RealisticHessian4096() {
  static const CalibrationStats stats = [] {
    // 2048 correlated calibration tokens (x = z·A with a banded mixing), as a real layer's inputs are.
    const int64_t n = 2048, d = 4096;
    std::mt19937 rng(3);
    std::normal_distribution<float> normal;
    std::vector<float> x(static_cast<size_t>(n * d));
    for (float& v : x) v = normal(rng);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t j = 1; j < d; ++j) x[t * d + j] += 0.5f * x[t * d + j - 1];
    CalibrationStats s;
    s.cols = d;
    AccumulateHessian(x.data(), n, &s);
    return s;
  }();
  return stats;
}

void BM_HessianAccumulation4096(benchmark::State& state) {
  const int64_t n = 512, d = 4096;
  std::vector<float> x(static_cast<size_t>(n * d), 0.25f);
  CalibrationStats s;
  s.cols = d;
  for (auto _ : state) AccumulateHessian(x.data(), n, &s);
  // syrk does n·d² multiply-adds on one triangle.
  state.counters["GFLOP/s"] = benchmark::Counter(1.0 * n * d * d, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
BENCHMARK(BM_HessianAccumulation4096)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_Gptq4bitG128Layer4096(benchmark::State& state) {
  const CalibrationStats& stats = RealisticHessian4096();
  Matrix w{kRows, kCols, std::vector<float>(static_cast<size_t>(kRows * kCols))};
  ConvertToF32(DType::kBF16, Bf16Weights().data(), w.data.size(), w.data.data());
  for (auto _ : state) {
    auto r = QuantizeGptq(w, stats, {4, 128, false, 0.01, false, false, 128});
    benchmark::DoNotOptimize(r);
  }
  // Inverse Cholesky ~ d³ (three factorisations/inversions of d³/3) plus the lazy updates ~ rows·d².
  const double flops = 1.0 * kCols * kCols * kCols + 1.0 * kRows * kCols * kCols;
  state.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
BENCHMARK(BM_Gptq4bitG128Layer4096)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

// GGUF codes: BF16 widened, then each ggml type's weighted least-squares block search (rtn) — arg: ggml type.
void BM_RtnGgml(benchmark::State& state) {
  const GgmlTypeTraits& t = TraitsOf(static_cast<GgmlType>(state.range(0)));
  state.SetLabel(t.name);
  const auto& src = Bf16Weights();
  for (auto _ : state) {
    Matrix w{kRows, kCols, std::vector<float>(src.size())};
    ConvertToF32(DType::kBF16, src.data(), src.size(), w.data.data());
    auto q = QuantizeGgmlRtn(w, t, nullptr);
    benchmark::DoNotOptimize(q);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(src.size() * 2));
}
BENCHMARK(BM_RtnGgml)->Arg(static_cast<int>(GgmlType::kQ4_K))->Arg(static_cast<int>(GgmlType::kQ4_0))
    ->Arg(static_cast<int>(GgmlType::kQ6_K))->Arg(static_cast<int>(GgmlType::kIQ4_NL))->Unit(benchmark::kMillisecond);

// GPTQ with each Q4_K block's scales fixed on its error-updated weights, beside BM_Gptq4bitG128Layer4096.
void BM_GptqQ4KLayer4096(benchmark::State& state) {
  const CalibrationStats& stats = RealisticHessian4096();
  Matrix w{kRows, kCols, std::vector<float>(static_cast<size_t>(kRows * kCols))};
  ConvertToF32(DType::kBF16, Bf16Weights().data(), w.data.size(), w.data.data());
  GptqOptions o;
  o.ggml = FindGgmlType("Q4_K");
  for (auto _ : state) {
    auto r = QuantizeGptq(w, stats, o);
    benchmark::DoNotOptimize(r);
  }
  const double flops = 1.0 * kCols * kCols * kCols + 1.0 * kRows * kCols * kCols;
  state.counters["GFLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate,
                                                 benchmark::Counter::kIs1000);
}
BENCHMARK(BM_GptqQ4KLayer4096)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

Matrix F32Weights() {
  Matrix w{kRows, kCols, std::vector<float>(static_cast<size_t>(kRows * kCols))};
  ConvertToF32(DType::kBF16, Bf16Weights().data(), w.data.size(), w.data.data());
  return w;
}

// Weights per second of each method on the 4096x4096 layer (seconds per layer = 16.8M / rate).
void SetWeightRate(benchmark::State& state) {
  state.counters["Mweights/s"] = benchmark::Counter(1e-6 * kRows * kCols, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Lut4bitKMeansPerTensor4096(benchmark::State& state) {
  const Matrix w = F32Weights();
  for (auto _ : state) {
    auto t = QuantizeLut(w, LutOptions{}, nullptr);
    benchmark::DoNotOptimize(t);
  }
  SetWeightRate(state);
}
BENCHMARK(BM_Lut4bitKMeansPerTensor4096)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

void BM_Vq2d3bitLayer4096(benchmark::State& state) {
  const Matrix w = F32Weights();
  const CalibrationStats& stats = RealisticHessian4096();
  for (auto _ : state) {
    auto t = QuantizeVq(w, stats, VqOptions{});
    benchmark::DoNotOptimize(t);
  }
  SetWeightRate(state);
}
BENCHMARK(BM_Vq2d3bitLayer4096)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

void BM_OneBitLayer4096(benchmark::State& state) {
  const Matrix w = F32Weights();
  const OneBitOptions options{state.range(0) == 0 ? OneBitDecomposition::kNmf : OneBitDecomposition::kSvd, 100, 0};
  for (auto _ : state) {
    auto t = QuantizeOneBit(w, options, nullptr);
    benchmark::DoNotOptimize(t);
  }
  SetWeightRate(state);
  state.SetLabel(state.range(0) == 0 ? "nmf" : "svd");
}
BENCHMARK(BM_OneBitLayer4096)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

// Decoding speed of the FP32 forward pass on the real stories260K (one token per iteration).
void BM_ForwardStories260K(benchmark::State& state) {
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = *OpenCheckpoint(store.get(), std::string(LOWBIT_SHARED_DATA) + "/models/stories260K/stories260K.bin");
  LlamaModel model = *LlamaModel::Load(*reader);
  int token = 1, pos = 0;
  for (auto _ : state) {
    if (++pos == 256) model.Reset(), pos = 0;
    const std::vector<float>& logits = model.Forward(token);
    token = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_ForwardStories260K)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace lowbit

int main(int argc, char** argv) {
  lowbit::ConfigureAllocatorForLargeBuffers();  // as lowbit and lowbitd run
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  benchmark::AddCustomContext("OPENBLAS_CORETYPE", coretype != nullptr ? coretype : "(unset)");
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
