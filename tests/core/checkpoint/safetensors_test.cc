// safetensors reading and writing, including every kind of malformed header a checkpoint can carry.
#include "core/checkpoint/safetensors.h"

#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/storage/local_object_store.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit {
namespace {

using ::testing::HasSubstr;

Tensor F32Tensor(const std::string& name, std::vector<int64_t> shape, float start) {
  Tensor t{name, DType::kF32, shape, std::string(NumElements(shape) * 4, '\0')};
  for (int64_t i = 0; i < NumElements(shape); ++i) {
    const float v = start + static_cast<float>(i);
    std::memcpy(t.bytes.data() + 4 * i, &v, 4);
  }
  return t;
}

// Writes a file with a hand-made header and `data_bytes` bytes of data.
void WriteRaw(const std::string& path, const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  std::ofstream out(path, std::ios::binary);
  const uint64_t len = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
  out << header << std::string(data_bytes, '\0');
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = *LocalObjectStore::Create({dir_.path()}); }
  absl::Status OpenRaw(const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
    WriteRaw(dir_.File("bad.safetensors"), header, data_bytes, claimed_len);
    return OpenSafetensors(store_.get(), "bad.safetensors").status();
  }
  testing::TempDir dir_;
  std::unique_ptr<LocalObjectStore> store_;
};

TEST_F(SafetensorsTest, WriteThenReadRoundTrips) {
  std::vector<Tensor> tensors = {F32Tensor("model.layers.0.mlp.up_proj.weight", {3, 5}, 1),
                                 F32Tensor("model.embed_tokens.weight", {4, 2}, 100)};
  ASSERT_TRUE(WriteSafetensors(store_.get(), "m/model.safetensors", tensors).ok());
  auto reader = OpenSafetensors(store_.get(), "m/model.safetensors");
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ((*reader)->tensors().size(), 2u);
  // Streaming order: embeddings before decoder blocks.
  EXPECT_EQ((*reader)->tensors()[0].name, "model.embed_tokens.weight");
  for (const TensorInfo& info : (*reader)->tensors()) {
    auto t = (*reader)->Read(info);
    ASSERT_TRUE(t.ok());
    const Tensor& expected = info.name == tensors[0].name ? tensors[0] : tensors[1];
    EXPECT_EQ(t->shape, expected.shape);
    EXPECT_EQ(t->bytes, expected.bytes);
  }
  // Data starts 8-byte aligned, as the reference writer arranges.
  uint64_t data_start = UINT64_MAX;
  for (const TensorInfo& info : (*reader)->tensors()) data_start = std::min(data_start, info.offset);
  EXPECT_EQ(data_start % 8, 0u);
}

TEST_F(SafetensorsTest, ReadsShardedCheckpointThroughIndex) {
  ASSERT_TRUE(WriteSafetensors(store_.get(), "s/model-00001-of-00002.safetensors",
                               {F32Tensor("model.layers.0.self_attn.q_proj.weight", {2, 2}, 0)}).ok());
  ASSERT_TRUE(WriteSafetensors(store_.get(), "s/model-00002-of-00002.safetensors",
                               {F32Tensor("model.layers.1.self_attn.q_proj.weight", {2, 2}, 10)}).ok());
  ASSERT_TRUE(store_->WriteAll("s/model.safetensors.index.json", R"({"metadata": {}, "weight_map": {
      "model.layers.0.self_attn.q_proj.weight": "model-00001-of-00002.safetensors",
      "model.layers.1.self_attn.q_proj.weight": "model-00002-of-00002.safetensors"}})").ok());
  ASSERT_TRUE(store_->WriteAll("s/config.json", R"({"architectures": ["LlamaForCausalLM"], "hidden_size": 2})").ok());
  auto reader = OpenCheckpoint(store_.get(), "s");
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ((*reader)->tensors().size(), 2u);
  EXPECT_EQ((*reader)->tensors()[1].name, "model.layers.1.self_attn.q_proj.weight");
  EXPECT_EQ((*reader)->descriptor().architecture, "LlamaForCausalLM");
  auto t = (*reader)->Read((*reader)->tensors()[1]);
  ASSERT_TRUE(t.ok());
  float first;
  std::memcpy(&first, t->bytes.data(), 4);
  EXPECT_EQ(first, 10.0f);
}

TEST_F(SafetensorsTest, IndexNamingAMissingTensorIsDataLoss) {
  ASSERT_TRUE(WriteSafetensors(store_.get(), "s/a.safetensors", {F32Tensor("x.weight", {1}, 0)}).ok());
  ASSERT_TRUE(store_->WriteAll("s/model.safetensors.index.json",
                               R"({"weight_map": {"x.weight": "a.safetensors", "y.weight": "a.safetensors"}})").ok());
  absl::Status s = OpenCheckpoint(store_.get(), "s").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("y.weight"));
}

TEST_F(SafetensorsTest, TruncatedFileIsDataLoss) {
  std::ofstream(dir_.File("bad.safetensors")) << "abc";
  absl::Status s = OpenSafetensors(store_.get(), "bad.safetensors").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("bad.safetensors"));
}

TEST_F(SafetensorsTest, HeaderLengthPastEndIsDataLoss) {
  absl::Status s = OpenRaw("{}", 0, /*claimed_len=*/1000);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("past the end"));
}

TEST_F(SafetensorsTest, InvalidJsonIsDataLoss) {
  absl::Status s = OpenRaw("{\"a\": [1, 2", 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("not a valid JSON"));
}

TEST_F(SafetensorsTest, OffsetsOutOfRangeAreDataLoss) {
  absl::Status s = OpenRaw(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("tensor w"));
  EXPECT_THAT(s.message(), HasSubstr("out of range"));
}

TEST_F(SafetensorsTest, OverlappingTensorsAreDataLoss) {
  absl::Status s = OpenRaw(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})", 12);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("overlap"));
}

TEST_F(SafetensorsTest, ByteSizeNotMatchingShapeIsDataLoss) {
  absl::Status s = OpenRaw(R"({"w": {"dtype": "BF16", "shape": [3, 3], "data_offsets": [0, 16]}})", 16);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr("needs 18"));
}

TEST_F(SafetensorsTest, UnsupportedDtypeIsInvalidArgumentNamingTheTensor) {
  absl::Status s = OpenRaw(R"({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", 8);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("unsupported dtype F64"));
  EXPECT_THAT(s.message(), HasSubstr("w"));
}

TEST_F(SafetensorsTest, NegativeShapeIsDataLoss) {
  absl::Status s = OpenRaw(R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
}

TEST_F(SafetensorsTest, AHeaderDeclaringMoreTensorsThanAnyModelHasIsDataLoss) {
  std::string header = "{";
  for (int i = 0; i < 70000; ++i) absl::StrAppend(&header, i ? "," : "", "\"t", i, "\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]}");
  header += "}";
  absl::Status s = OpenRaw(header, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("70000 entries"), absl::string_view::npos) << s.message();
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  EXPECT_EQ(OpenCheckpoint(store_.get(), "nothing/here.safetensors").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(OpenCheckpoint(store_.get(), "empty-dir").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, WriterRejectsOutOfOrderOrWrongSize) {
  auto out = store_->NewWriter("w.safetensors");
  ASSERT_TRUE(out.ok());
  auto writer = SafetensorsWriter::Create(out->get(), {{"a", DType::kF32, {2}}, {"b", DType::kF32, {1}}});
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ((*writer)->Append("b", std::string(4, '\0')).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*writer)->Append("a", std::string(4, '\0')).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*writer)->Append("a", std::string(8, '\0')).ok());
  EXPECT_EQ((*writer)->Finish().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace lowbit
