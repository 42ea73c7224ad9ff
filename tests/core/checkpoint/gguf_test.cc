// The GGUF container: what the writer writes, the reader reads back (metadata, tensor shapes, types and
// offsets), and damaged or foreign files are refused with a reason. @huggingface/gguf and llama.cpp read
// lowbit's files independently in tests/e2e/gguf_llamacpp_test.mjs.
#include "core/checkpoint/gguf.h"

#include <fstream>
#include <random>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "core/storage/local_object_store.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit {
namespace {

using ::testing::HasSubstr;

class GgufTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = *LocalObjectStore::Create({"/"}); }

  // A two-tensor llama file: F32 norm, Q8_0 matrix of 3 rows x 64 values.
  std::string Write(const GgufMetadata& metadata, const std::string& name = "m.gguf") {
    const std::string uri = dir_.File(name);
    auto out = *store_->NewWriter(uri);
    auto writer = GgufWriter::Create(out.get(), metadata,
                                     {{"output_norm.weight", {64}, GgmlType::kF32}, {"blk.0.ffn_up.weight", {3, 64}, GgmlType::kQ8_0}});
    EXPECT_TRUE(writer.ok()) << writer.status();
    EXPECT_TRUE((*writer)->Append("output_norm.weight", std::string(256, '\1')).ok());
    EXPECT_TRUE((*writer)->Append("blk.0.ffn_up.weight", std::string(3 * 68, '\2')).ok());
    EXPECT_TRUE((*writer)->Finish().ok());
    EXPECT_TRUE(out->Commit().ok());
    return uri;
  }
  std::string Bytes(const std::string& uri) { return *store_->ReadRange(uri, 0, store_->Stat(uri)->size); }
  std::string Put(const std::string& name, const std::string& bytes) {
    std::ofstream(dir_.File(name), std::ios::binary) << bytes;
    return dir_.File(name);
  }

  testing::TempDir dir_;
  std::unique_ptr<LocalObjectStore> store_;
};

TEST_F(GgufTest, HeaderReadsBackAsWritten) {
  const std::string uri = Write({{"general.architecture", GgufValue::String("llama")},
                                 {"llama.block_count", GgufValue::U32(1)},
                                 {"tokenizer.ggml.tokens", GgufValue::Strings({"a", "bc"})},
                                 {"tokenizer.ggml.scores", GgufValue::F32s({0.5f, -1.0f})}});
  auto h = ReadGgufHeader(store_.get(), uri);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->version, 3u);
  ASSERT_EQ(h->metadata.size(), 4u);
  EXPECT_EQ(h->Find("general.architecture")->text, "llama");
  EXPECT_EQ(h->Find("llama.block_count")->integer, 1u);
  EXPECT_EQ(h->Find("tokenizer.ggml.tokens")->texts, (std::vector<std::string>{"a", "bc"}));
  EXPECT_EQ(h->Find("tokenizer.ggml.scores")->floats, (std::vector<float>{0.5f, -1.0f}));
  ASSERT_EQ(h->tensors.size(), 2u);
  EXPECT_EQ(h->tensors[1].shape, (std::vector<int64_t>{3, 64}));
  EXPECT_EQ(h->tensors[1].type, GgmlType::kQ8_0);
  EXPECT_EQ(h->tensors[1].bytes, 3u * 68);
  EXPECT_EQ(h->tensors[0].offset % 32, 0u);
  EXPECT_EQ(h->tensors[1].offset, h->tensors[0].offset + 256) << "256 bytes are already 32-aligned";
  EXPECT_EQ(Bytes(uri).substr(h->tensors[1].offset, 3), std::string(3, '\2'));
}

TEST_F(GgufTest, DamagedAndForeignFilesAreRefusedWithAReason) {
  const std::string good = Bytes(Write({{"general.architecture", GgufValue::String("llama")}}));
  std::string magic = good;
  magic[0] = 'X';
  EXPECT_THAT(ReadGgufHeader(store_.get(), Put("magic.gguf", magic)).status().message(), HasSubstr("no GGUF magic"));
  std::string version = good;
  version[4] = 9;
  EXPECT_THAT(ReadGgufHeader(store_.get(), Put("version.gguf", version)).status().message(), HasSubstr("GGUF version 9"));
  EXPECT_THAT(ReadGgufHeader(store_.get(), Put("cut.gguf", good.substr(0, 40))).status().message(), HasSubstr("cut short"));
  EXPECT_THAT(ReadGgufHeader(store_.get(), Put("short.gguf", good.substr(0, good.size() - 10))).status().message(),
              HasSubstr("runs past the end of the file"));
  // The second tensor's type field (after its name, dims and ne) as IQ2_XXS (16), which lowbit does not read.
  std::string type = good;
  const size_t at = type.find("blk.0.ffn_up.weight") + 19 + 4 + 16;
  type[at] = 16;
  auto unknown = ReadGgufHeader(store_.get(), Put("type.gguf", type));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(unknown.status().message(), HasSubstr("ggml type 16"));
  // A file of an architecture outside the table.
  const std::string other = Write({{"general.architecture", GgufValue::String("mamba")}}, "mamba.gguf");
  auto mamba = OpenGguf(store_.get(), other);
  EXPECT_EQ(mamba.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(mamba.status().message(), HasSubstr("mamba"));
}

// A few thousand headers with random bytes changed: each is read or refused, never a crash or a hang.
TEST_F(GgufTest, DamagedHeadersAreReadOrRefusedNeverCrash) {
  const std::string good = Bytes(Write({{"general.architecture", GgufValue::String("llama")},
                                        {"llama.block_count", GgufValue::U32(1)},
                                        {"tokenizer.ggml.tokens", GgufValue::Strings({"a", "bc"})}}));
  const size_t header = good.find(std::string(256, '\1'));
  std::mt19937 rng(11);
  int refused = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string bad = good;
    for (int k = 0; k < 1 + i % 4; ++k) bad[rng() % header] = static_cast<char>(rng());
    const std::string uri = Put("fuzz.gguf", bad);
    refused += !ReadGgufHeader(store_.get(), uri).ok();
    (void)OpenGguf(store_.get(), uri);
  }
  EXPECT_GT(refused, 1000);
}

}  // namespace
}  // namespace lowbit
