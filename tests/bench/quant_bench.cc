// Throughput of the hot paths on a 4096x4096 BF16 matrix (a Llama-2-7B attention projection), each
// reported as bytes of input per second beside a memcpy of the same bytes in the same run.
#include <cstdlib>
#include <cstring>
#include <random>

#include "benchmark/benchmark.h"
#include "core/pack/gptq.h"
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
    auto packed = PackGptq("layer", *q);
    benchmark::DoNotOptimize(packed);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(src.size() * 2));
}
BENCHMARK(BM_Rtn4bitG128WithPacking)->Unit(benchmark::kMillisecond);

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
