// The llama2.c reader on the real stories260K checkpoint.
#include "core/checkpoint/llama2c.h"

#include "core/checkpoint/checkpoint_reader.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/storage/local_object_store.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit {
namespace {

using ::testing::HasSubstr;

const std::string kModel = testing::SharedData("models/stories260K/stories260K.bin");

std::unique_ptr<LocalObjectStore> RootStore() { return *LocalObjectStore::Create({"/"}); }

Matrix ReadMatrix(const CheckpointReader& reader, const std::string& name) {
  for (const TensorInfo& info : reader.tensors()) {
    if (info.name == name) {
      return *ToMatrix(*reader.Read(info));
    }
  }
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

// Raw Meta-layout rows of layer 0's wq / wk, straight from the file (offsets from llama2.c's run.c).
Matrix ReadMetaMatrix(int64_t float_offset, int64_t rows, int64_t cols) {
  std::ifstream in(kModel, std::ios::binary);
  in.seekg(28 + float_offset * 4);
  Matrix m{rows, cols, std::vector<float>(rows * cols)};
  in.read(reinterpret_cast<char*>(m.data.data()), rows * cols * 4);
  return m;
}

std::vector<float> MatVec(const Matrix& w, const std::vector<float>& x) {
  std::vector<float> y(w.rows, 0.0f);
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t c = 0; c < w.cols; ++c) y[r] += w.row(r)[c] * x[c];
  return y;
}

// Meta RoPE rotates pairs (2i, 2i+1); HF RoPE rotates (i, i + d/2). Both with frequency i.
void RopeMeta(float* v, int d, int pos) {
  for (int i = 0; i < d / 2; ++i) {
    const double a = pos * std::pow(10000.0, -2.0 * i / d);
    const float x = v[2 * i], y = v[2 * i + 1];
    v[2 * i] = x * std::cos(a) - y * std::sin(a);
    v[2 * i + 1] = x * std::sin(a) + y * std::cos(a);
  }
}
void RopeHf(float* v, int d, int pos) {
  for (int i = 0; i < d / 2; ++i) {
    const double a = pos * std::pow(10000.0, -2.0 * i / d);
    const float x = v[i], y = v[i + d / 2];
    v[i] = x * std::cos(a) - y * std::sin(a);
    v[i + d / 2] = x * std::sin(a) + y * std::cos(a);
  }
}

TEST(Llama2cTest, PresentsStories260KWithHfNamesAndShapes) {
  auto store = RootStore();
  auto reader = OpenLlama2c(store.get(), kModel);
  ASSERT_TRUE(reader.ok()) << reader.status();
  const auto& tensors = (*reader)->tensors();
  ASSERT_EQ(tensors.size(), 1u + 5 * 9 + 1) << "embeddings, 9 tensors per block, final norm; lm_head is tied";
  EXPECT_EQ(tensors.front().name, "model.embed_tokens.weight");
  EXPECT_EQ(tensors.back().name, "model.norm.weight");
  const ModelDescriptor& d = (*reader)->descriptor();
  EXPECT_EQ(d.hidden_size, 64);
  EXPECT_EQ(d.intermediate_size, 172);
  EXPECT_EQ(d.num_layers, 5);
  EXPECT_EQ(d.num_heads, 8);
  EXPECT_EQ(d.num_kv_heads, 4);
  EXPECT_EQ(d.vocab_size, 512);
  EXPECT_TRUE(d.tie_word_embeddings);
  int linear = 0;
  for (const TensorInfo& t : tensors) {
    if (RoleOf(t.name, t.shape.size()) == TensorRole::kLinear) ++linear;
    if (t.name == "model.layers.3.mlp.down_proj.weight") {
      EXPECT_EQ(t.shape, (std::vector<int64_t>{64, 172}));
    }
    if (t.name == "model.layers.3.self_attn.k_proj.weight") {
      EXPECT_EQ(t.shape, (std::vector<int64_t>{32, 64}));
    }
  }
  EXPECT_EQ(linear, 35);
}

// The permutation is right iff HF-layout weights with HF RoPE give the same attention scores as
// Meta-layout weights with Meta RoPE, for every head pair and positions.
TEST(Llama2cTest, QkPermutationPreservesAttentionScores) {
  auto store = RootStore();
  auto reader = *OpenLlama2c(store.get(), kModel);
  const int64_t dim = 64, kv_dim = 32, hd = 8;
  const int64_t wq_offset = 512 * 64 + 5 * 64;           // after embeddings and rms_att
  const int64_t wk_offset = wq_offset + 5 * dim * dim;   // after all wq
  const Matrix wq_meta = ReadMetaMatrix(wq_offset, dim, dim);
  const Matrix wk_meta = ReadMetaMatrix(wk_offset, kv_dim, dim);
  const Matrix wq_hf = ReadMatrix(*reader, "model.layers.0.self_attn.q_proj.weight");
  const Matrix wk_hf = ReadMatrix(*reader, "model.layers.0.self_attn.k_proj.weight");
  ASSERT_NE(wq_hf.data, wq_meta.data) << "q rows must be permuted";
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> x(dim), y(dim);
  for (float& v : x) v = normal(rng);
  for (float& v : y) v = normal(rng);
  std::vector<float> q_meta = MatVec(wq_meta, x), k_meta = MatVec(wk_meta, y);
  std::vector<float> q_hf = MatVec(wq_hf, x), k_hf = MatVec(wk_hf, y);
  const int pos_q = 7, pos_k = 3;
  for (int h = 0; h < 8; ++h) RopeMeta(&q_meta[h * hd], hd, pos_q), RopeHf(&q_hf[h * hd], hd, pos_q);
  for (int h = 0; h < 4; ++h) RopeMeta(&k_meta[h * hd], hd, pos_k), RopeHf(&k_hf[h * hd], hd, pos_k);
  for (int h = 0; h < 8; ++h) {
    const int kv = h / 2;
    double s_meta = 0, s_hf = 0;
    for (int i = 0; i < hd; ++i) {
      s_meta += q_meta[h * hd + i] * k_meta[kv * hd + i];
      s_hf += q_hf[h * hd + i] * k_hf[kv * hd + i];
    }
    EXPECT_NEAR(s_hf, s_meta, 1e-4 * (1 + std::fabs(s_meta))) << "head " << h;
  }
  // v is not rotated, so it is read unchanged.
  const Matrix wv_hf = ReadMatrix(*reader, "model.layers.0.self_attn.v_proj.weight");
  EXPECT_EQ(wv_hf.data, ReadMetaMatrix(wk_offset + 5 * kv_dim * dim, kv_dim, dim).data);
}

TEST(Llama2cTest, TruncatedFileIsDataLossNamingTheFile) {
  testing::TempDir dir;
  const std::string path = dir.File("short.bin");
  std::filesystem::copy_file(kModel, path);
  std::filesystem::resize_file(path, 500000);
  auto store = RootStore();
  absl::Status s = OpenLlama2c(store.get(), path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("short.bin"));
  EXPECT_THAT(s.message(), HasSubstr("the file has 500000"));
}

// Found by tests/fuzz/llama2c_fuzz.cc: a vocab_size of INT32_MIN (the "unshared classifier" sign) was
// negated, which is undefined.
TEST(Llama2cTest, MostNegativeVocabSizeIsDataLoss) {
  testing::TempDir dir;
  const int32_t header[7] = {8, 16, 1, 2, 1, INT32_MIN, 8};
  std::ofstream(dir.File("min.bin"), std::ios::binary).write(reinterpret_cast<const char*>(header), sizeof header);
  auto store = RootStore();
  absl::Status s = OpenLlama2c(store.get(), dir.File("min.bin")).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("implausible header"));
}

TEST(CheckpointNameTest, TheDirectoryOrForAFileAtTheRootItsStem) {
  EXPECT_EQ(CheckpointName("file:///m/stories260K/stories260K.bin"), "stories260K");
  EXPECT_EQ(CheckpointName("s3://bucket/models/llama"), "llama");
  EXPECT_EQ(CheckpointName("stories260K.bin"), "stories260K") << "was empty: the model card said '# ('";
}

TEST(Llama2cTest, GarbageHeaderIsDataLoss) {
  testing::TempDir dir;
  std::ofstream(dir.File("junk.bin")) << std::string(64, '\xff');
  auto store = RootStore();
  EXPECT_EQ(OpenLlama2c(store.get(), dir.File("junk.bin")).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace lowbit
