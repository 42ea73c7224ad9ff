// The forward pass on the real stories260K: greedy decoding from BOS must reproduce, token for token,
// the text llama2.c's own reference implementation generates, from the .bin and from its HF conversion.
#include "core/runtime/llama_model.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"
#include "core/job/convert_job.h"
#include "core/runtime/calibration.h"
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
  auto tokenizer = *Llama2cTokenizer::Load(store.get(), kTokenizer, 512);
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
  const std::vector<int> golden = tokenizer.Encode(ReadText(testing::SharedData("models/stories260K/golden_greedy_prefix.txt")), false);
  std::ofstream(dir.File("stream.ids.json")) << nlohmann::json(golden).dump();
  auto from_stream = CalibrationWindows(store.get(), dir.File("stream.ids.json"), tokenizer, {4, 16, 0});
  ASSERT_TRUE(from_stream.ok()) << from_stream.status();
  ASSERT_EQ(from_stream->size(), 4u);
  for (const auto& w : *from_stream) {
    // BOS, then 15 consecutive ids of the stream.
    auto at = std::search(golden.begin(), golden.end(), w.begin() + 1, w.end());
    EXPECT_NE(at, golden.end());
  }
  std::ofstream(dir.File("windows.ids.json")) << "[[1, 5, 6, 7], [1, 9]]";
  auto given = CalibrationWindows(store.get(), dir.File("windows.ids.json"), tokenizer, {32, 3, 0});
  ASSERT_TRUE(given.ok()) << given.status();
  EXPECT_EQ(*given, (std::vector<std::vector<int>>{{1, 5, 6}, {1, 9}}));
  std::ofstream(dir.File("bad.ids.json")) << "[1, 2, 99999]";
  EXPECT_EQ(CalibrationWindows(store.get(), dir.File("bad.ids.json"), tokenizer, {1, 2, 0}).status().code(),
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

// The sequence-level sub-block outputs AWQ searches with must equal what the token-by-token forward pass
// computes: attention (o_proj applied) from the captured attention-norm outputs, MLP from the MLP-norm ones.
TEST(LlamaModelTest, SubBlockOutputsMatchTheForwardPass) {
  auto store = *LocalObjectStore::Create({"/"});
  auto reader = OpenCheckpoint(store.get(), kModel);
  ASSERT_TRUE(reader.ok());
  LlamaModel model = *LlamaModel::Load(**reader);
  const int layer = 2;
  const std::string p = "model.layers.2.";
  std::vector<float> attn_in, attn_out, mlp_in, mlp_hidden;
  model.set_capture([&](int l, LinearInput in, const float* x) {
    if (l != layer) return;
    const Matrix& q = *model.MutableLinear(p + "self_attn.q_proj.weight");
    const Matrix& gate = *model.MutableLinear(p + "mlp.gate_proj.weight");
    if (in == LinearInput::kQkv) attn_in.insert(attn_in.end(), x, x + q.cols);
    if (in == LinearInput::kO) attn_out.insert(attn_out.end(), x, x + q.rows);
    if (in == LinearInput::kGateUp) mlp_in.insert(mlp_in.end(), x, x + gate.cols);
    if (in == LinearInput::kDown) mlp_hidden.insert(mlp_hidden.end(), x, x + gate.rows);
  });
  const std::vector<int> tokens = {1, 403, 30, 261, 88, 7, 350, 41, 12, 500};
  for (int t : tokens) model.Forward(t, layer);
  model.set_capture(nullptr);
  Matrix* q = model.MutableLinear(p + "self_attn.q_proj.weight");
  Matrix* o = model.MutableLinear(p + "self_attn.o_proj.weight");
  Matrix* gate = model.MutableLinear(p + "mlp.gate_proj.weight");
  Matrix* down = model.MutableLinear(p + "mlp.down_proj.weight");
  const int64_t n = static_cast<int64_t>(tokens.size());
  const Matrix attention = model.AttentionOutput({n, q->cols, attn_in}, *q, *model.MutableLinear(p + "self_attn.k_proj.weight"),
                                                 *model.MutableLinear(p + "self_attn.v_proj.weight"), *o);
  const Matrix mlp = LlamaModel::MlpOutput({n, gate->cols, mlp_in}, *gate, *model.MutableLinear(p + "mlp.up_proj.weight"), *down);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t r = 0; r < o->rows; ++r) {
      double expected = 0;
      for (int64_t c = 0; c < o->cols; ++c) expected += o->row(r)[c] * attn_out[t * o->cols + c];
      ASSERT_NEAR(attention.row(t)[r], expected, 1e-4) << t << "," << r;
      expected = 0;
      for (int64_t c = 0; c < down->cols; ++c) expected += down->row(r)[c] * mlp_hidden[t * down->cols + c];
      ASSERT_NEAR(mlp.row(t)[r], expected, 1e-4) << t << "," << r;
    }
  }
}

}  // namespace
}  // namespace lowbit
