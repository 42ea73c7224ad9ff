#include "core/checkpoint/safetensors.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// The reference implementation refuses headers above 100 MB; so do we, before allocating.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;
// A 70B checkpoint has under a thousand tensors per file; a header declaring more than this is forged.
constexpr size_t kMaxTensors = 1u << 16;

absl::Status Corrupt(absl::string_view uri, absl::string_view detail) {
  return absl::DataLossError(absl::StrCat("corrupt safetensors file ", uri, ": ", detail));
}

class SafetensorsReader final : public CheckpointReader {
 public:
  SafetensorsReader(ObjectStore* store, std::vector<TensorInfo> tensors, ModelDescriptor descriptor,
                    std::map<std::string, std::string> metadata)
      : CheckpointReader(store) {
    tensors_ = std::move(tensors);
    descriptor_ = std::move(descriptor);
    metadata_ = std::move(metadata);
  }
};

absl::StatusOr<ModelDescriptor> ReadDescriptorBeside(ObjectStore* store, absl::string_view uri) {
  const std::string config_uri = JoinUri(ParentUri(uri), "config.json");
  absl::StatusOr<std::string> text = store->ReadAll(config_uri);
  if (absl::IsNotFound(text.status())) return ModelDescriptor::Unknown();
  if (!text.ok()) return text.status();
  absl::StatusOr<ModelDescriptor> descriptor = ModelDescriptor::FromConfigJson(*text);
  if (!descriptor.ok()) return absl::InvalidArgumentError(absl::StrCat(config_uri, ": ", descriptor.status().message()));
  return descriptor;
}

}  // namespace

absl::StatusOr<std::vector<TensorInfo>> ReadSafetensorsHeader(ObjectStore* store, absl::string_view uri,
                                                               std::map<std::string, std::string>* metadata) {
  ASSIGN_OR_RETURN(ObjectInfo object, store->Stat(uri));
  if (object.size < 8) return Corrupt(uri, absl::StrCat("file is ", object.size, " bytes, shorter than the 8-byte header length"));
  ASSIGN_OR_RETURN(std::string length_bytes, store->ReadRange(uri, 0, 8));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<uint8_t>(length_bytes[i]);
  if (header_len > kMaxHeaderBytes || header_len > object.size - 8) {
    return Corrupt(uri, absl::StrCat("header length ", header_len, " is past the end of the file (", object.size, " bytes)"));
  }
  ASSIGN_OR_RETURN(std::string header_text, store->ReadRange(uri, 8, header_len));
  const nlohmann::json header = nlohmann::json::parse(header_text, nullptr, /*allow_exceptions=*/false);
  if (!header.is_object()) return Corrupt(uri, "header is not a valid JSON object");
  if (header.size() > kMaxTensors + 1) {
    return Corrupt(uri, absl::StrCat("header declares ", header.size(), " entries; at most ", kMaxTensors, " tensors are read"));
  }

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = object.size - data_start;
  std::vector<TensorInfo> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return Corrupt(uri, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) return Corrupt(uri, absl::StrCat("__metadata__ value of ", key, " is not a string"));
        if (metadata != nullptr) (*metadata)[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string& tensor_name = name;  // a structured binding cannot be captured before C++20 in clang 14
    const auto where = [&](absl::string_view detail) { return Corrupt(uri, absl::StrCat("tensor ", tensor_name, ": ", detail)); };
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets")) {
      return where("entry needs dtype, shape and data_offsets");
    }
    const auto& dtype = entry["dtype"];
    const auto& shape = entry["shape"];
    const auto& offsets = entry["data_offsets"];
    if (!dtype.is_string()) return where("dtype is not a string");
    std::optional<DType> parsed = ParseDType(dtype.get<std::string>());
    if (!parsed) {
      return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " in ", uri, " has unsupported dtype ",
                                                     dtype.get<std::string>()));
    }
    TensorInfo info{name, *parsed, {}, std::string(uri), 0, 0};
    if (!shape.is_array()) return where("shape is not an array");
    for (const auto& dim : shape) {
      if (!dim.is_number_unsigned()) return where("shape has a negative or non-integer dimension");
      info.shape.push_back(dim.get<int64_t>());
    }
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned()) {
      return where("data_offsets is not a pair of non-negative integers");
    }
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return where(absl::StrCat("data_offsets [", begin, ", ", end, ") are out of range (data is ", data_size, " bytes)"));
    }
    const uint64_t expected = static_cast<uint64_t>(NumElements(info.shape)) * DTypeSize(info.dtype);
    if (end - begin != expected) {
      return where(absl::StrCat("holds ", end - begin, " bytes but ", DTypeName(info.dtype), " ",
                                ShapeString(info.shape), " needs ", expected));
    }
    info.offset = data_start + begin;
    info.size = end - begin;
    tensors.push_back(std::move(info));
  }
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& prev = *by_offset[i - 1];
    if (prev.size > 0 && by_offset[i]->size > 0 && by_offset[i]->offset < prev.offset + prev.size) {
      return Corrupt(uri, absl::StrCat("tensors ", prev.name, " and ", by_offset[i]->name, " overlap"));
    }
  }
  return tensors;
}

absl::Status ExpectSpec(const Tensor& t, const TensorSpec& spec) {
  if (t.dtype != spec.dtype || t.shape != spec.shape ||
      t.bytes.size() != static_cast<size_t>(NumElements(spec.shape)) * DTypeSize(spec.dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", t.name, " is ", DTypeName(t.dtype), " ", ShapeString(t.shape),
                                                   ", expected ", DTypeName(spec.dtype), " ", ShapeString(spec.shape)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CheckpointReader>> OpenSafetensors(ObjectStore* store, absl::string_view uri) {
  std::vector<TensorInfo> tensors;
  std::map<std::string, std::string> metadata;
  if (absl::EndsWith(uri, ".index.json")) {
    ASSIGN_OR_RETURN(std::string text, store->ReadAll(uri));
    const nlohmann::json index = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      return absl::DataLossError(absl::StrCat("corrupt index ", uri, ": no weight_map object"));
    }
    std::map<std::string, std::string> shard_of;  // tensor -> shard file
    for (const auto& [name, file] : index["weight_map"].items()) {
      if (!file.is_string() || absl::StrContains(file.get<std::string>(), "/")) {
        return absl::DataLossError(absl::StrCat("corrupt index ", uri, ": bad shard name for ", name));
      }
      shard_of[name] = file.get<std::string>();
    }
    std::map<std::string, bool> shards;
    for (const auto& [name, file] : shard_of) shards[file] = true;
    for (const auto& [file, unused] : shards) {
      ASSIGN_OR_RETURN(std::vector<TensorInfo> shard_tensors,
                       ReadSafetensorsHeader(store, JoinUri(ParentUri(uri), file), &metadata));
      for (TensorInfo& t : shard_tensors) {
        auto it = shard_of.find(t.name);
        if (it == shard_of.end() || it->second != file) {
          return absl::DataLossError(absl::StrCat("shard ", file, " holds tensor ", t.name, " that ", uri, " does not map to it"));
        }
        shard_of.erase(it);
        tensors.push_back(std::move(t));
      }
    }
    if (!shard_of.empty()) {
      return absl::DataLossError(absl::StrCat("index ", uri, " maps tensor ", shard_of.begin()->first, " to ",
                                              shard_of.begin()->second, ", which does not contain it"));
    }
  } else {
    ASSIGN_OR_RETURN(tensors, ReadSafetensorsHeader(store, uri, &metadata));
  }
  SortForStreaming(&tensors);
  ASSIGN_OR_RETURN(ModelDescriptor descriptor, ReadDescriptorBeside(store, uri));
  return std::unique_ptr<CheckpointReader>(new SafetensorsReader(store, std::move(tensors), std::move(descriptor),
                                                                  std::move(metadata)));
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    ObjectWriter* out, std::vector<TensorSpec> specs, const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorSpec& spec : specs) {
    if (spec.name == "__metadata__" || header.contains(spec.name)) {
      return absl::InvalidArgumentError(absl::StrCat("duplicate or reserved tensor name ", spec.name));
    }
    const uint64_t size = static_cast<uint64_t>(NumElements(spec.shape)) * DTypeSize(spec.dtype);
    header[spec.name] = {{"dtype", DTypeName(spec.dtype)}, {"shape", spec.shape}, {"data_offsets", {offset, offset + size}}};
    offset += size;
  }
  std::string text = header.dump();
  // Pad with spaces so the data starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string length(8, '\0');
  for (int i = 0; i < 8; ++i) length[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  RETURN_IF_ERROR(out->Append(length));
  RETURN_IF_ERROR(out->Append(text));
  return std::unique_ptr<SafetensorsWriter>(new SafetensorsWriter(out, std::move(specs)));
}

absl::Status SafetensorsWriter::Append(absl::string_view name, absl::string_view bytes) {
  if (next_ >= specs_.size() || specs_[next_].name != name) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " written out of order"));
  }
  const TensorSpec& spec = specs_[next_];
  const uint64_t size = static_cast<uint64_t>(NumElements(spec.shape)) * DTypeSize(spec.dtype);
  if (bytes.size() != size) {
    return absl::InvalidArgumentError(absl::StrCat("tensor ", name, " has ", bytes.size(), " bytes, its header says ", size));
  }
  ++next_;
  return out_->Append(bytes);
}

absl::Status SafetensorsWriter::Finish() const {
  if (next_ != specs_.size()) {
    return absl::FailedPreconditionError(absl::StrCat("only ", next_, " of ", specs_.size(), " tensors were written"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ShardedSafetensorsWriter>> ShardedSafetensorsWriter::Create(
    OpenFile open, std::vector<TensorSpec> specs, std::map<std::string, std::string> metadata, uint64_t shard_bytes,
    std::vector<File> committed) {
  if (shard_bytes == 0) return absl::InvalidArgumentError("shard size must be positive");
  std::vector<Shard> shards;
  uint64_t filled = 0;
  for (TensorSpec& spec : specs) {
    const uint64_t size = static_cast<uint64_t>(NumElements(spec.shape)) * DTypeSize(spec.dtype);
    if (shards.empty() || (filled > 0 && filled + size > shard_bytes)) {
      shards.push_back({});
      filled = 0;
    }
    filled += size;
    shards.back().specs.push_back(std::move(spec));
  }
  if (shards.empty()) shards.push_back({});
  if (shards.size() > 99999) return absl::InvalidArgumentError("more than 99999 shards: raise the shard size");
  for (size_t i = 0; i < shards.size(); ++i) {
    shards[i].name = shards.size() == 1 ? "model.safetensors"
                                        : absl::StrFormat("model-%05d-of-%05d.safetensors", i + 1, shards.size());
  }
  if (committed.size() > shards.size()) {
    return absl::InvalidArgumentError(absl::StrCat(committed.size(), " shards committed of ", shards.size()));
  }
  for (size_t i = 0; i < committed.size(); ++i) {
    if (committed[i].name != shards[i].name) {
      return absl::InvalidArgumentError(absl::StrCat("committed shard ", committed[i].name, " is not the plan's ", shards[i].name));
    }
  }
  std::unique_ptr<ShardedSafetensorsWriter> w(new ShardedSafetensorsWriter(std::move(open), std::move(shards), std::move(metadata)));
  w->current_ = committed.size();
  w->files_ = std::move(committed);
  // Every shard committed: an attempt interrupted after its last shard, before the commit of the output.
  if (w->current_ < w->shards_.size()) RETURN_IF_ERROR(w->OpenNext());
  return w;
}

int ShardedSafetensorsWriter::ShardOf(absl::string_view name) const {
  for (size_t i = 0; i < shards_.size(); ++i) {
    for (const TensorSpec& spec : shards_[i].specs) {
      if (spec.name == name) return static_cast<int>(i);
    }
  }
  return -1;
}

absl::Status ShardedSafetensorsWriter::OpenNext() {
  const Shard& shard = shards_[current_];
  ASSIGN_OR_RETURN(out_, open_(shard.name));
  ASSIGN_OR_RETURN(writer_, SafetensorsWriter::Create(out_.get(), shard.specs, metadata_));
  in_shard_ = 0;
  return absl::OkStatus();
}

absl::Status ShardedSafetensorsWriter::CommitCurrent() {
  RETURN_IF_ERROR(writer_->Finish());
  RETURN_IF_ERROR(out_->Commit());
  files_.push_back({shards_[current_].name, out_->bytes_written()});
  writer_.reset();
  out_.reset();
  return absl::OkStatus();
}

absl::Status ShardedSafetensorsWriter::Append(absl::string_view name, absl::string_view bytes) {
  if (writer_ == nullptr) return absl::FailedPreconditionError(absl::StrCat("tensor ", name, " after the last shard"));
  RETURN_IF_ERROR(writer_->Append(name, bytes));
  if (++in_shard_ == shards_[current_].specs.size()) {
    RETURN_IF_ERROR(CommitCurrent());
    if (++current_ < shards_.size()) RETURN_IF_ERROR(OpenNext());
  }
  return absl::OkStatus();
}

absl::Status ShardedSafetensorsWriter::Finish() {
  if (writer_ != nullptr && shards_[current_].specs.empty()) {  // a model without tensors: one empty file
    RETURN_IF_ERROR(CommitCurrent());
    ++current_;
  }
  if (current_ != shards_.size()) {
    return absl::FailedPreconditionError(absl::StrCat("only ", current_, " of ", shards_.size(), " shards were completed"));
  }
  return absl::OkStatus();
}

uint64_t ShardedSafetensorsWriter::bytes_written() const {
  uint64_t total = out_ != nullptr ? out_->bytes_written() : 0;
  for (const File& f : files_) total += f.bytes;
  return total;
}

std::string ShardedSafetensorsWriter::IndexJson() const {
  uint64_t total = 0;
  nlohmann::json weight_map = nlohmann::json::object();
  for (const Shard& shard : shards_) {
    for (const TensorSpec& spec : shard.specs) {
      total += static_cast<uint64_t>(NumElements(spec.shape)) * DTypeSize(spec.dtype);
      weight_map[spec.name] = shard.name;
    }
  }
  return nlohmann::json{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}}.dump(2);
}

absl::Status WriteSafetensors(ObjectStore* store, absl::string_view uri, const std::vector<Tensor>& tensors) {
  std::vector<TensorSpec> specs;
  for (const Tensor& t : tensors) specs.push_back({t.name, t.dtype, t.shape});
  ASSIGN_OR_RETURN(std::unique_ptr<ObjectWriter> out, store->NewWriter(uri));
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsWriter> writer, SafetensorsWriter::Create(out.get(), std::move(specs)));
  for (const Tensor& t : tensors) {
    RETURN_IF_ERROR(writer->Append(t.name, t.bytes));
  }
  RETURN_IF_ERROR(writer->Finish());
  return out->Commit();
}

}  // namespace lowbit
