#include "core/pack/dequantized_reader.h"

#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/pack/awq.h"
#include "core/pack/gptq.h"
#include "core/pack/native.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

enum class Layout { kGptq, kAwq, kNative };

struct QuantizedLayerInfo {
  Layout layout;
  std::string prefix;
  std::vector<std::string> parts;  ///< tensor names
  NativeLayout native;             ///< kNative only
};

class DequantizingReader final : public CheckpointReader {
 public:
  static absl::StatusOr<std::unique_ptr<CheckpointReader>> Create(ObjectStore* store,
                                                                  std::unique_ptr<CheckpointReader> inner) {
    std::unique_ptr<DequantizingReader> r(new DequantizingReader(store, std::move(inner)));
    RETURN_IF_ERROR(r->Index());
    return std::unique_ptr<CheckpointReader>(std::move(r));
  }

  absl::StatusOr<Tensor> Read(const TensorInfo& info) const override {
    auto it = layers_.find(info.name);
    if (it == layers_.end()) return inner_->Read(info);
    const QuantizedLayerInfo& layer = it->second;
    std::map<std::string, Tensor> parts;
    for (const std::string& name : layer.parts) {
      ASSIGN_OR_RETURN(parts[name], inner_->Read(*by_name_.at(name)));
    }
    const int64_t rows = info.shape[0], cols = info.shape[1];
    const std::string& p = layer.prefix;
    QuantizedLayer q;
    switch (layer.layout) {
      case Layout::kGptq: {
        const int bits = GptqCodeBits(parts[p + ".qweight"].shape[0], cols);
        ASSIGN_OR_RETURN(q, UnpackGptq(parts[p + ".qweight"], parts[p + ".qzeros"], parts[p + ".scales"],
                                       parts[p + ".g_idx"], bits, rows, cols, gptq_zeros_));
        break;
      }
      case Layout::kAwq: {
        ASSIGN_OR_RETURN(q, UnpackAwq(parts[p + ".qweight"], parts[p + ".qzeros"], parts[p + ".scales"], awq_group_size_));
        break;
      }
      case Layout::kNative: {
        ASSIGN_OR_RETURN(q, UnpackNative(p, layer.native, parts));
        break;
      }
    }
    const Matrix w = Dequantize(q);
    return Tensor{info.name, DType::kF32, info.shape,
                  std::string(reinterpret_cast<const char*>(w.data.data()), w.data.size() * sizeof(float))};
  }

 private:
  DequantizingReader(ObjectStore* store, std::unique_ptr<CheckpointReader> inner)
      : CheckpointReader(store), inner_(std::move(inner)) {
    descriptor_ = inner_->descriptor();
    metadata_ = inner_->metadata();
    for (const TensorInfo& t : inner_->tensors()) by_name_[t.name] = &t;
    const nlohmann::json& qc = descriptor_.config.contains("quantization_config")
                                   ? descriptor_.config["quantization_config"] : nlohmann::json::object();
    awq_group_size_ = qc.is_object() && qc.contains("group_size") && qc["group_size"].is_number_integer()
                          ? qc["group_size"].get<int64_t>() : -1;
    gptq_zeros_ = GptqZerosOf(qc);
  }

  absl::Status Index() {
    std::set<std::string> hidden;
    std::map<std::string, TensorInfo> weights;  // by the anchor tensor's name: the presented weight
    auto add = [&](QuantizedLayerInfo layer, const TensorInfo& anchor, std::vector<int64_t> shape) {
      for (const std::string& part : layer.parts) hidden.insert(part);
      weights[anchor.name] = {layer.prefix + ".weight", DType::kF32, shape, anchor.uri, 0,
                              static_cast<uint64_t>(shape[0] * shape[1] * 4)};
      layers_[layer.prefix + ".weight"] = std::move(layer);
    };
    for (const auto& [key, value] : metadata_) {
      if (!absl::StartsWith(key, kNativeLayoutKeyPrefix)) continue;
      const std::string prefix = key.substr(std::string(kNativeLayoutKeyPrefix).size());
      ASSIGN_OR_RETURN(NativeLayout layout, NativeLayout::FromJson(value));
      QuantizedLayerInfo layer{Layout::kNative, prefix, {}, layout};
      for (const TensorSpec& s : NativeTensorSpecs(prefix, layout)) {
        if (by_name_.count(s.name) == 0) return absl::DataLossError(absl::StrCat("layer ", prefix, " lacks tensor ", s.name));
        layer.parts.push_back(s.name);
      }
      const TensorInfo& anchor = *by_name_[layer.parts.front()];
      add(std::move(layer), anchor, {layout.rows, layout.cols});
    }
    for (const TensorInfo& t : inner_->tensors()) {
      if (!absl::EndsWith(t.name, ".qweight")) continue;
      const std::string prefix = t.name.substr(0, t.name.size() - 8);
      const auto scales = by_name_.find(prefix + ".scales");
      const auto qzeros = by_name_.find(prefix + ".qzeros");
      if (scales == by_name_.end() || qzeros == by_name_.end() || scales->second->shape.size() != 2 || t.shape.size() != 2) {
        return absl::DataLossError(absl::StrCat("layer ", prefix, ": qweight without matrix scales and qzeros"));
      }
      const auto g_idx = by_name_.find(prefix + ".g_idx");
      if (g_idx != by_name_.end()) {
        if (g_idx->second->shape.size() != 1) return absl::DataLossError(absl::StrCat("layer ", prefix, ": g_idx is not a vector"));
        add({Layout::kGptq, prefix, {t.name, qzeros->first, scales->first, g_idx->first}, {}}, t,
            {scales->second->shape[1], g_idx->second->shape[0]});
      } else {
        add({Layout::kAwq, prefix, {t.name, qzeros->first, scales->first}, {}}, t, {scales->second->shape[1], t.shape[0]});
      }
    }
    for (const TensorInfo& t : inner_->tensors()) {
      auto w = weights.find(t.name);
      if (w != weights.end()) {
        tensors_.push_back(w->second);
      } else if (hidden.count(t.name) == 0) {
        tensors_.push_back(t);
      }
    }
    return absl::OkStatus();
  }

  std::unique_ptr<CheckpointReader> inner_;
  std::map<std::string, const TensorInfo*> by_name_;
  std::map<std::string, QuantizedLayerInfo> layers_;  // by presented weight name
  int64_t awq_group_size_ = -1;
  GptqZeros gptq_zeros_ = GptqZeros::kV1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenDequantized(ObjectStore* store, absl::string_view uri) {
  ASSIGN_OR_RETURN(std::unique_ptr<CheckpointReader> inner, OpenCheckpoint(store, uri));
  return DequantizingReader::Create(store, std::move(inner));
}

}  // namespace lowbit
