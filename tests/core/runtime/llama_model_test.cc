// The forward pass on the real stories260K: greedy decoding from BOS must reproduce, token for token,
// the text llama2.c's own reference implementation generates, from the .bin and from its HF conversion.
#include "core/runtime/llama_model.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "core/job/convert_job.h"
#include "absl/strings/str_cat.h"
#include "core/runtime/token_windows.h"
#include "core/runtime/tokenizer.h"
#include "core/storage/local_object_store.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit {
namespace {

const std::string kModel = testing::SharedData("models/stories260K/stories260K.bin");
const std::string kTokenizer = testing::SharedData("models/stories260K/tok512.bin");

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string GreedyText(ObjectStore* store, const std::string& model_uri, int steps) {
  auto reader = OpenCheckpoint(store, model_uri);
  EXPECT_TRUE(reader.ok()) << reader.status();
  auto model = LlamaModel::Load(**reader);
  EXPECT_TRUE(model.ok()) << model.status();
  auto tokenizer = Llama2cTokenizer::Load(store, kTokenizer, model->vocab_size());
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::string text;
  int previous = Llama2cTokenizer::kBos;
  for (int token : GreedyDecode(*model, Llama2cTokenizer::kBos, steps)) {
    text += tokenizer->Decode(previous, token);
    previous = token;
  }
  return text;
}

// Whitespace at the file's end is not part of the comparison (the reference prints a final newline).
std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

TEST(LlamaModelTest, GreedyDecodingReproducesTheReferenceFromBothFormats) {
  auto store = *LocalObjectStore::Create({"/"});
  const std::string golden = Trimmed(ReadText(testing::SharedData("models/stories260K/golden_greedy_prefix.txt")));
  const std::string from_bin = GreedyText(store.get(), kModel, 200);
  EXPECT_EQ(Trimmed(from_bin), golden);
  testing::TempDir dir;
  ASSERT_TRUE(RunConvertJob(store.get(), kModel, dir.File("hf")).ok());
  EXPECT_EQ(Trimmed(GreedyText(store.get(), dir.File("hf"), 200)), golden);
  // The 256-step run of the reference C implementation, too.
  EXPECT_EQ(Trimmed(GreedyText(store.get(), kModel, 256)),
            Trimmed(ReadText(testing::SharedData("models/stories260K/greedy_256steps_runc.txt"))));
}

TEST(TokenizerTest, EncodeDecodeRoundTripsTheGoldenText) {
  auto store = *LocalObjectStore::Create({"/"});
  auto tokenizer = Llama2cTokenizer::Load(store.get(), kTokenizer, 512);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  const std::string golden = ReadText(testing::SharedData("models/stories260K/golden_greedy_prefix.txt"));
  const std::vector<int> tokens = tokenizer->Encode(golden, /*bos=*/true);
  ASSERT_GT(tokens.size(), 10u);
  EXPECT_EQ(tokens[0], Llama2cTokenizer::kBos);
  EXPECT_LT(tokens.size(), golden.size() / 2) << "BPE merges must compress the text";
  std::string decoded;
  for (size_t i = 1; i < tokens.size(); ++i) decoded += tokenizer->Decode(tokens[i - 1], tokens[i]);
  EXPECT_EQ(decoded, golden);
}

TEST(CalibrationTest, WindowsFromTextAndFromPreTokenizedIds) {
  auto store = *LocalObjectStore::Create({"/"});
  auto loaded = *Llama2cTokenizer::Load(store.get(), kTokenizer, 512);
  const TokenSource tokenizer{&loaded, 512, Llama2cTokenizer::kBos};
  const TokenSource ids_only{nullptr, 512, Llama2cTokenizer::kBos};
  auto from_text = CalibrationWindows(store.get(), testing::SharedData("text/tiny-shakespeare.txt"), tokenizer, {8, 64, 3});
  ASSERT_TRUE(from_text.ok()) << from_text.status();
  ASSERT_EQ(from_text->size(), 8u);
  for (const auto& w : *from_text) {
    ASSERT_EQ(w.size(), 64u);
    EXPECT_EQ(w[0], Llama2cTokenizer::kBos);
  }
  // The same windows again for the same seed; different ones for another.
  EXPECT_EQ(*from_text, *CalibrationWindows(store.get(), testing::SharedData("text/tiny-shakespeare.txt"), tokenizer, {8, 64, 3}));
  EXPECT_NE(*from_text, *CalibrationWindows(store.get(), testing::SharedData("text/tiny-shakespeare.txt"), tokenizer, {8, 64, 4}));

  testing::TempDir dir;
  const std::vector<int> golden = loaded.Encode(ReadText(testing::SharedData("models/stories260K/golden_greedy_prefix.txt")), false);
  std::ofstream(dir.File("stream.ids.json")) << nlohmann::json(golden).dump();
  auto from_stream = CalibrationWindows(store.get(), dir.File("stream.ids.json"), ids_only, {4, 16, 0});
  ASSERT_TRUE(from_stream.ok()) << from_stream.status();
  ASSERT_EQ(from_stream->size(), 4u);
  for (const auto& w : *from_stream) {
    // BOS, then 15 consecutive ids of the stream.
    auto at = std::search(golden.begin(), golden.end(), w.begin() + 1, w.end());
    EXPECT_NE(at, golden.end());
  }
  std::ofstream(dir.File("windows.ids.json")) << "[[1, 5, 6, 7], [1, 9]]";
  auto given = CalibrationWindows(store.get(), dir.File("windows.ids.json"), ids_only, {32, 3, 0});
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_EQ(*given, (std::vector<std::vector<int>>{{1, 5, 6}, {1, 9}}));
  std::ofstream(dir.File("bad.ids.json")) << "[1, 2, 99999]";
  EXPECT_EQ(CalibrationWindows(store.get(), dir.File("bad.ids.json"), ids_only, {1, 2, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A plain text without a tokenizer is refused, not misread.
  EXPECT_EQ(CalibrationWindows(store.get(), testing::SharedData("text/tiny-shakespeare.txt"), ids_only, {1, 2, 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TokenizerTest, TruncatedFileIsDataLoss) {
  testing::TempDir dir;
  std::ofstream(dir.File("tok.bin")) << std::string(20, '\x01');
  auto store = *LocalObjectStore::Create({"/"});
  EXPECT_EQ(Llama2cTokenizer::Load(store.get(), dir.File("tok.bin"), 512).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// |a - b| within `tolerance` of b's scale, for every element.
void ExpectClose(const float* a, const float* b, size_t n, double tolerance, const std::string& what) {
  double scale = 0;
  for (size_t i = 0; i < n; ++i) scale = std::max(scale, static_cast<double>(std::abs(b[i])));
  for (size_t i = 0; i < n; ++i) {
    ASSERT_LE(std::abs(static_cast<double>(a[i]) - b[i]), tolerance * scale) << what << " element " << i;
  }
}

// The batched block (sgemm over all windows, attention per window, no KV cache) must compute what the
// token-by-token decoder computes with its KV cache: every linear input of every block and the logits,
// on windows of different lengths batched together (short ones take the attention's loop path, the
// 400-token one its sgemm path).
TEST(DecoderBlockTest, BatchedBlocksMatchTheTokenByTokenForward) {
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = *OpenCheckpoint(store.get(), kModel);
  LlamaModel model = *LlamaModel::Load(*reader);
  std::vector<std::vector<int>> windows = {{1, 403, 30, 261, 88, 7, 350, 41, 12, 500, 66, 9}, {1, 5, 6, 7, 300, 2, 11}, {1}};
  for (int i = 1; i < 400; ++i) windows[2].push_back((i * 37 + 11) % 512);
  // Token by token: captures [window][layer][input] as concatenated rows.
  std::map<std::tuple<int, int>, std::vector<float>> token_inputs;
  std::vector<std::vector<float>> token_logits;
  for (const auto& w : windows) {
    model.Reset();
    model.set_capture([&](int l, LinearInput in, const float* x) {
      const int64_t n = in == LinearInput::kDown ? model.geometry().hidden : model.geometry().dim;
      auto& rows = token_inputs[{l, static_cast<int>(in)}];
      rows.insert(rows.end(), x, x + n);
    });
    for (int t : w) token_logits.push_back(model.Forward(t));
  }
  const Architecture& arch = *FindArchitecture("LlamaForCausalLM");
  const BlockGeometry g = model.geometry();
  std::vector<int> tokens;
  for (const auto& w : windows) tokens.insert(tokens.end(), w.begin(), w.end());
  Matrix x = *Embed(*reader, arch, g, tokens);
  for (int l = 0; l < g.layers; ++l) {
    const BlockWeights w = *ReadBlock(*reader, arch, g, l);
    x = BlockForward(g, w, x, {12, 7, 400}, [&](LinearInput in, const Matrix& rows) {
      const std::vector<float>& expected = token_inputs[{l, static_cast<int>(in)}];
      ASSERT_EQ(rows.data.size(), expected.size());
      ExpectClose(rows.data.data(), expected.data(), expected.size(), 1e-4, absl::StrCat("block ", l, " input ", static_cast<int>(in)));
    });
  }
  const OutputHead head = *ReadOutputHead(*reader, arch, g);
  const Matrix logits = TimesTransposed(RmsNormRows(x, head.norm, g.eps), head.lm_head);
  ASSERT_EQ(logits.rows, static_cast<int64_t>(token_logits.size()));
  for (int64_t t = 0; t < logits.rows; ++t) {
    ExpectClose(logits.row(t), token_logits[t].data(), token_logits[t].size(), 1e-4, absl::StrCat("logits of token ", t));
  }
}

}  // namespace
}  // namespace lowbit
