#include "core/runtime/block_calibrator.h"

#include <chrono>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/quant/error_metrics.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

constexpr const char* kInputNames[] = {"q/k/v", "o", "gate/up", "down"};

double SquaredDifference(const Matrix& a, const Matrix& b) {
  double e = 0;
  for (size_t i = 0; i < a.data.size(); ++i) e += (static_cast<double>(a.data[i]) - b.data[i]) * (a.data[i] - b.data[i]);
  return e;
}

void ScaleColumns(Matrix& m, const std::vector<float>& s) {
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c = 0; c < m.cols; ++c) m.data[r * m.cols + c] *= s[c];
}

// Output rows divided by s, and the bias with them: the layer's output is divided by s (AWQ's prev_op).
void UnscaleRows(Matrix& m, std::vector<float>& bias, const std::vector<float>& s) {
  for (int64_t r = 0; r < m.rows; ++r)
    for (int64_t c = 0; c < m.cols; ++c) m.data[r * m.cols + c] /= s[r];
  for (size_t r = 0; r < bias.size(); ++r) bias[r] /= s[r];
}

}  // namespace

absl::StatusOr<std::unique_ptr<BlockCalibrator>> BlockCalibrator::Create(const CheckpointReader& reader,
                                                                         const std::vector<std::vector<int>>& windows,
                                                                         BlockCalibratorOptions options) {
  ASSIGN_OR_RETURN(const Architecture* arch, ArchitectureOf(reader.descriptor()));
  ASSIGN_OR_RETURN(const BlockGeometry g, BlockGeometry::Of(reader.descriptor()));
  if (windows.empty()) return absl::InvalidArgumentError("calibration: no windows");
  std::unique_ptr<BlockCalibrator> c(new BlockCalibrator(reader, *arch, g, std::move(options)));
  std::vector<int> tokens;
  std::vector<int64_t> lengths;
  for (const std::vector<int>& w : windows) {
    if (w.empty()) return absl::InvalidArgumentError("calibration: an empty window");
    if (static_cast<int64_t>(w.size()) > g.max_positions) {
      return absl::InvalidArgumentError(absl::StrCat("calibration: windows of ", w.size(), " tokens exceed the model's ",
                                                     g.max_positions, " positions"));
    }
    lengths.push_back(static_cast<int64_t>(w.size()));
    tokens.insert(tokens.end(), w.begin(), w.end());
  }
  c->chunks_ = ChunkWindows(lengths, c->options_.rows_per_chunk);
  ASSIGN_OR_RETURN(c->x_, Embed(reader, *arch, g, tokens));
  c->Prefetch(0);
  return c;
}

BlockCalibrator::~BlockCalibrator() {
  if (prefetch_.valid()) prefetch_.wait();
}

void BlockCalibrator::Prefetch(int block) {
  if (block >= num_blocks()) return;
  prefetch_ = std::async(std::launch::async, [this, block] { return ReadBlockTensors(reader_, arch_, block); });
}

absl::Status BlockCalibrator::ResumeAt(int block, Matrix hidden) {
  if (next_ != 0 || block <= 0 || block >= num_blocks()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resume calibration at block ", block, " of ", num_blocks()));
  }
  if (hidden.rows != x_.rows || hidden.cols != x_.cols || hidden.data.size() != x_.data.size()) {
    return absl::InvalidArgumentError(absl::StrCat("saved hidden states are ", hidden.rows, "x", hidden.cols, ", the windows give ",
                                                   x_.rows, "x", x_.cols));
  }
  if (prefetch_.valid()) prefetch_.wait();  // block 0's read, not needed any more
  prefetch_ = {};
  x_ = std::move(hidden);
  next_ = block;
  Prefetch(block);
  return absl::OkStatus();
}

bool BlockCalibrator::Needs(const LinearGroup& group) const {
  for (const std::string& name : group.linears) {
    if (options_.include(arch_.BlockPrefix(next_) + name)) return true;
  }
  return false;
}

absl::StatusOr<CalibratedBlock> BlockCalibrator::Next() {
  if (next_ >= num_blocks()) return absl::OutOfRangeError("every block is calibrated");
  RETURN_IF_ERROR(Check());
  if (options_.context) options_.context->Progress({JobPhase::kCalibrating, next_, num_blocks(), arch_.BlockPrefix(next_)});
  CalibratedBlock out;
  out.index = next_;
  if (!prefetch_.valid()) Prefetch(next_);  // after a failed block
  ASSIGN_OR_RETURN(out.tensors, prefetch_.get());
  ASSIGN_OR_RETURN(BlockWeights weights, BlockFromTensors(out.tensors, arch_, geometry_, next_));
  // The layers this block quantizes are held in float32 from here on; their stored copies can go.
  std::erase_if(out.tensors, [&](const Tensor& t) { return options_.include(t.name) && weights.Linear(t.name.substr(arch_.BlockPrefix(next_).size())) != nullptr; });
  if (options_.mode == BlockCalibratorOptions::Mode::kAwq) {
    RETURN_IF_ERROR(Awq(weights, &out));
  } else {
    RETURN_IF_ERROR(Sequential(weights, &out));
  }
  ++next_;
  return out;
}

namespace {

// Σ x² per input column, from H = 2/n Σ x xᵀ.
std::vector<float> InputSum2(const CalibrationStats& stats) {
  std::vector<float> sum2(static_cast<size_t>(stats.cols));
  for (int64_t c = 0; c < stats.cols; ++c) {
    sum2[c] = static_cast<float>(0.5 * stats.hessian[c * stats.cols + c] * static_cast<double>(stats.samples));
  }
  return sum2;
}

}  // namespace

absl::Status BlockCalibrator::QuantizeGroup(const LinearGroup& group, const CalibrationStats& stats, BlockWeights* w,
                                            CalibratedBlock* out) {
  const std::string prefix = arch_.BlockPrefix(next_);
  std::vector<std::string> names;
  for (const std::string& n : group.linears) {
    if (options_.include(prefix + n)) names.push_back(n);
  }
  if (options_.mode == BlockCalibratorOptions::Mode::kMeasure) return MeasureGroup(prefix, names, stats, *w);
  std::vector<std::future<absl::StatusOr<CalibratedLayer>>> results;
  for (const std::string& n : names) {
    auto work = [this, &stats, name = prefix + n, m = w->Linear(n)]() -> absl::StatusOr<CalibratedLayer> {
      const auto started = std::chrono::steady_clock::now();
      absl::StatusOr<CalibratedLayer> r = options_.quantize(name, *m, stats, options_.context);
      if (!r.ok()) return r;
      // Measured here, on the checkpoint's weights, so the stream need not read them again.
      if (!r->relative_error) r->relative_error = RelativeFrobeniusError(*m, r->tensor);
      r->input_sum2 = InputSum2(stats);
      r->input_tokens = stats.samples;
      r->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      return r;
    };
    if (options_.pool != nullptr) {
      results.push_back(options_.pool->Submit(std::move(work)));
    } else {
      std::promise<absl::StatusOr<CalibratedLayer>> done;
      done.set_value(work());
      results.push_back(done.get_future());
    }
  }
  absl::Status status = absl::OkStatus();
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StatusOr<CalibratedLayer> r = results[i].get();  // every future is waited for, failed or not
    if (!r.ok()) {
      if (status.ok()) status = absl::Status(r.status().code(), absl::StrCat("tensor ", prefix, names[i], ": ", r.status().message()));
      continue;
    }
    if (!status.ok()) continue;
    *w->Linear(names[i]) = Dequantize(r->tensor);  // what the next groups and blocks see
    out->layers.emplace(prefix + names[i], *std::move(r));
    if (options_.context) options_.context->Progress({JobPhase::kCalibrating, next_, num_blocks(), prefix + names[i]});
  }
  return status;
}

absl::Status BlockCalibrator::MeasureGroup(const std::string& prefix, const std::vector<std::string>& names,
                                           const CalibrationStats& stats, BlockWeights& w) {
  std::vector<std::future<absl::Status>> results;
  for (const std::string& n : names) {
    for (int task = 0; task < options_.measure_tasks; ++task) {
      auto work = [this, &stats, name = prefix + n, m = w.Linear(n), task] {
        return options_.measure(name, *m, stats, task, options_.context);
      };
      if (options_.pool != nullptr) {
        results.push_back(options_.pool->Submit(std::move(work)));
      } else {
        std::promise<absl::Status> done;
        done.set_value(work());
        results.push_back(done.get_future());
      }
    }
  }
  absl::Status status = absl::OkStatus();
  for (auto& r : results) status.Update(r.get());  // every future is waited for, failed or not
  if (options_.context) options_.context->Progress({JobPhase::kCalibrating, next_, num_blocks(), prefix + names.back()});
  return status;
}

absl::Status BlockCalibrator::Sequential(BlockWeights& w, CalibratedBlock* out) {
  const BlockGeometry& g = geometry_;
  const LinearGroup& qkv = arch_.groups[0];
  const LinearGroup& o = arch_.groups[1];
  const LinearGroup& gate_up = arch_.groups[2];
  const LinearGroup& down = arch_.groups[3];
  // Statistics of one linear input over every chunk: `input(chunk)` makes that chunk's input rows.
  auto capture = [&](const std::function<Matrix(const Chunk&)>& input, int64_t cols) -> absl::StatusOr<CalibrationStats> {
    CalibrationStats stats;
    stats.cols = cols;
    for (const Chunk& c : chunks_) {
      RETURN_IF_ERROR(Check());
      const Matrix rows = input(c);
      AccumulateHessian(rows.data.data(), rows.rows, &stats);
    }
    return stats;
  };
  auto normed = [&](const Matrix& m, const std::vector<float>& weight, const Chunk& c) {
    return RmsNormRows(RowsOf(m, c.first_row, c.rows), weight, g.eps);
  };
  if (Needs(qkv)) {
    ASSIGN_OR_RETURN(CalibrationStats s, capture([&](const Chunk& c) { return normed(x_, w.attn_norm, c); }, g.dim));
    RETURN_IF_ERROR(QuantizeGroup(qkv, s, &w, out));
  }
  // The attention output through the quantized q/k/v, kept for o's statistics and the residual.
  Matrix a{x_.rows, g.q_dim(), std::vector<float>(static_cast<size_t>(x_.rows * g.q_dim()))};
  for (const Chunk& c : chunks_) {
    RETURN_IF_ERROR(Check());
    PutRows(Attention(g, w, normed(x_, w.attn_norm, c), c.lengths), c.first_row, &a);
  }
  if (Needs(o)) {
    ASSIGN_OR_RETURN(CalibrationStats s, capture([&](const Chunk& c) { return RowsOf(a, c.first_row, c.rows); }, g.q_dim()));
    RETURN_IF_ERROR(QuantizeGroup(o, s, &w, out));
  }
  // h = x + attention·oᵀ, in a's storage when the shapes allow.
  Matrix h = g.q_dim() == g.dim ? std::move(a) : Matrix{x_.rows, g.dim, std::vector<float>(x_.data.size())};
  for (const Chunk& c : chunks_) {
    RETURN_IF_ERROR(Check());
    Matrix part = Project(RowsOf(g.q_dim() == g.dim ? h : a, c.first_row, c.rows), w.o, w.o_bias);
    AddInPlace(&part, RowsOf(x_, c.first_row, c.rows));
    PutRows(part, c.first_row, &h);
  }
  a = Matrix{};
  if (Needs(gate_up)) {
    ASSIGN_OR_RETURN(CalibrationStats s, capture([&](const Chunk& c) { return normed(h, w.ffn_norm, c); }, g.dim));
    RETURN_IF_ERROR(QuantizeGroup(gate_up, s, &w, out));
  }
  auto mlp_input = [&](const Chunk& c) { return SwiGlu(w, normed(h, w.ffn_norm, c), w.gate, w.up); };
  if (Needs(down)) {
    ASSIGN_OR_RETURN(CalibrationStats s, capture(mlp_input, g.hidden));
    RETURN_IF_ERROR(QuantizeGroup(down, s, &w, out));
  }
  // The next block is read during this block's last pass, not earlier: started before down_proj's GPTQ
  // it would sit beside down's H, its factor and its working copy (7B: 0.4 GB more at the peak).
  Prefetch(next_ + 1);
  // The next block's input: h + MLP(h) through the quantized block.
  for (const Chunk& c : chunks_) {
    RETURN_IF_ERROR(Check());
    Matrix part = Project(mlp_input(c), w.down, w.down_bias);
    AddInPlace(&part, RowsOf(h, c.first_row, c.rows));
    PutRows(part, c.first_row, &x_);
  }
  return absl::OkStatus();
}

absl::Status BlockCalibrator::Awq(BlockWeights& w, CalibratedBlock* out) {
  const BlockGeometry& g = geometry_;
  const std::string p = arch_.BlockPrefix(next_);
  const AwqOptions& options = options_.awq;
  // One pass over the float block: the four inputs' statistics, the norms' outputs kept for the searches,
  // the attention's and the MLP's float outputs as their references, and the next block's input.
  std::array<CalibrationStats, 4> stats;
  stats[0].cols = g.dim, stats[1].cols = g.q_dim(), stats[2].cols = g.dim, stats[3].cols = g.hidden;
  Matrix attn_x{x_.rows, g.dim, std::vector<float>(x_.data.size())};
  Matrix mlp_x = attn_x, attn_ref = attn_x, mlp_ref = attn_x;
  for (const Chunk& c : chunks_) {
    RETURN_IF_ERROR(Check());
    const Matrix x = RowsOf(x_, c.first_row, c.rows);
    const Matrix xn = RmsNormRows(x, w.attn_norm, g.eps);
    const Matrix att = Attention(g, w, xn, c.lengths);
    Matrix attn_out = Project(att, w.o, w.o_bias);
    Matrix h = attn_out;
    AddInPlace(&h, x);
    const Matrix hn = RmsNormRows(h, w.ffn_norm, g.eps);
    const Matrix act = SwiGlu(w, hn, w.gate, w.up);
    Matrix mlp_out = Project(act, w.down, w.down_bias);
    AccumulateHessian(xn.data.data(), xn.rows, &stats[0]);
    AccumulateHessian(att.data.data(), att.rows, &stats[1]);
    AccumulateHessian(hn.data.data(), hn.rows, &stats[2]);
    AccumulateHessian(act.data.data(), act.rows, &stats[3]);
    PutRows(xn, c.first_row, &attn_x);
    PutRows(hn, c.first_row, &mlp_x);
    PutRows(attn_out, c.first_row, &attn_ref);
    PutRows(mlp_out, c.first_row, &mlp_ref);
    AddInPlace(&mlp_out, h);
    PutRows(mlp_out, c.first_row, &x_);  // float activations, as AutoAWQ
  }
  Prefetch(next_ + 1);  // read while the searches run
  // The blocks q/k/v and gate/up feed, as AutoAWQ inspects them: the error of a candidate's output.
  const AwqBlockError attention_error = [&](const std::vector<Matrix>& c) {
    double e = 0;
    for (const Chunk& ch : chunks_) {
      const Matrix att = Attention(g, w, RowsOf(attn_x, ch.first_row, ch.rows), c[0], c[1], c[2], ch.lengths);
      e += SquaredDifference(Project(att, w.o, w.o_bias), RowsOf(attn_ref, ch.first_row, ch.rows));
    }
    return e;
  };
  const AwqBlockError mlp_error = [&](const std::vector<Matrix>& c) {
    double e = 0;
    for (const Chunk& ch : chunks_) {
      const Matrix act = SwiGlu(w, RowsOf(mlp_x, ch.first_row, ch.rows), c[0], c[1]);
      e += SquaredDifference(Project(act, w.down, w.down_bias), RowsOf(mlp_ref, ch.first_row, ch.rows));
    }
    return e;
  };
  // Searches on the original weights, as AutoAWQ, then the scales are applied.
  std::array<AwqScales, 4> found;
  const JobContext* context = options_.context;
  ASSIGN_OR_RETURN(found[0], SearchAwqScales({&w.q, &w.k, &w.v}, stats[0], options, attention_error, context));
  const bool fold_v_into_o = w.v.rows == w.o.cols;  // no grouped-query attention
  if (fold_v_into_o) {
    ASSIGN_OR_RETURN(found[1], SearchAwqScales({&w.o}, stats[1], options, nullptr, context));
  } else {
    found[1].scales.assign(static_cast<size_t>(w.o.cols), 1.0f);
  }
  ASSIGN_OR_RETURN(found[2], SearchAwqScales({&w.gate, &w.up}, stats[2], options, mlp_error, context));
  ASSIGN_OR_RETURN(found[3], SearchAwqScales({&w.down}, stats[3], options, nullptr, context));
  for (int64_t c = 0; c < g.dim; ++c) w.attn_norm[c] /= found[0].scales[c];
  for (Matrix* m : {&w.q, &w.k, &w.v}) ScaleColumns(*m, found[0].scales);
  if (fold_v_into_o) {
    UnscaleRows(w.v, w.v_bias, found[1].scales);
    ScaleColumns(w.o, found[1].scales);
  }
  for (int64_t c = 0; c < g.dim; ++c) w.ffn_norm[c] /= found[2].scales[c];
  for (Matrix* m : {&w.gate, &w.up}) ScaleColumns(*m, found[2].scales);
  UnscaleRows(w.up, w.up_bias, found[3].scales);
  ScaleColumns(w.down, found[3].scales);
  out->replaced[p + arch_.attn_norm] = w.attn_norm;
  out->replaced[p + arch_.ffn_norm] = w.ffn_norm;
  if (fold_v_into_o && !w.v_bias.empty()) out->replaced[p + "self_attn.v_proj.bias"] = w.v_bias;
  if (!w.up_bias.empty()) out->replaced[p + "mlp.up_proj.bias"] = w.up_bias;

  for (const LinearGroup& group : arch_.groups) {
    const int in = static_cast<int>(group.input);
    for (const std::string& suffix : group.linears) {
      const std::string name = p + suffix;
      const Matrix& scaled = *w.Linear(suffix);
      if (!options_.include(name)) {  // kept in high precision, but with the scales folded in
        out->replaced[name] = scaled.data;
        continue;
      }
      RETURN_IF_ERROR(Check());
      const auto started = std::chrono::steady_clock::now();
      const bool clip = options.clip && !absl::StrContains(suffix, "q_proj") && !absl::StrContains(suffix, "k_proj");
      AwqOptions layer_options = options;
      if (options_.awq_ggml) layer_options.ggml = options_.awq_ggml(name);
      absl::StatusOr<QuantizedLayer> qt = QuantizeAwqLayer(scaled, ScaleStats(stats[in], found[in].scales), clip, layer_options);
      if (!qt.ok()) return absl::Status(qt.status().code(), absl::StrCat("tensor ", name, ": ", qt.status().message()));
      const AwqScales& f = found[in];
      std::string note = group.input == LinearInput::kO && !fold_v_into_o
                             ? "awq: o_proj unscaled (grouped-query attention: v's outputs are not o's inputs)"
                             : absl::StrFormat("awq: %s scales alpha=%.2f, search error %.3g of plain RTN's", kInputNames[in],
                                               f.alpha, f.error_unscaled > 0 ? f.error / f.error_unscaled : 1.0);
      if (clip) absl::StrAppend(&note, "; clipped");
      const double error = RelativeFrobeniusError(scaled, *qt);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      out->layers.emplace(name, CalibratedLayer{*std::move(qt), note, error, seconds, InputSum2(stats[in]), stats[in].samples});
      if (options_.context) options_.context->Progress({JobPhase::kCalibrating, next_, num_blocks(), name});
    }
  }
  return absl::OkStatus();
}

}  // namespace lowbit
