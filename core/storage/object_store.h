// ObjectStore: the byte-range read / atomic write interface every checkpoint and result goes through.
//
// URIs name objects ("file:///models/x/model.safetensors", later "s3://bucket/key"). Readers never load
// a whole object: they ask for byte ranges, so memory follows the largest tensor, not the model.
// Writers are invisible until Commit(): an aborted or destroyed uncommitted writer leaves nothing behind.
// Implementations are thread-safe; one ObjectWriter is used by one thread at a time.
#ifndef LOWBIT_CORE_STORAGE_OBJECT_STORE_H_
#define LOWBIT_CORE_STORAGE_OBJECT_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace lowbit {

struct ObjectInfo {
  std::string uri;
  uint64_t size = 0;  ///< bytes
};

class ObjectWriter {
 public:
  virtual ~ObjectWriter() = default;
  // Appends bytes to the pending object.
  virtual absl::Status Append(absl::string_view data) = 0;
  // Makes the object visible under its URI, atomically. No call is valid afterwards.
  virtual absl::Status Commit() = 0;
  // Discards everything appended. Idempotent; also done by the destructor of an uncommitted writer.
  virtual void Abort() = 0;
  // Bytes appended so far.
  virtual uint64_t bytes_written() const = 0;
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;
  // NOT_FOUND if the object does not exist.
  virtual absl::StatusOr<ObjectInfo> Stat(absl::string_view uri) = 0;
  // Reads exactly `length` bytes at `offset`; OUT_OF_RANGE if the range passes the object's end.
  virtual absl::StatusOr<std::string> ReadRange(absl::string_view uri, uint64_t offset,
                                                uint64_t length) = 0;
  // Objects whose URI starts with `prefix`, sorted by URI.
  virtual absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix) = 0;
  virtual absl::StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(absl::string_view uri) = 0;
  // Deletes an object; OK if it is already absent.
  virtual absl::Status Delete(absl::string_view uri) = 0;
  // Writes a whole (small) object only if none is at `uri`, atomically against every other writer (an
  // exclusive create locally, a conditional PUT with If-None-Match: * on S3); ALREADY_EXISTS otherwise.
  virtual absl::Status CreateExclusive(absl::string_view uri, absl::string_view data) = 0;
  // Moves an object to `to` in the same store, replacing what is there.
  virtual absl::Status Rename(absl::string_view from, absl::string_view to) = 0;
  // Removes what dead writers left under `prefix` (partial files, open multipart uploads); how many.
  virtual absl::StatusOr<int> DiscardIncomplete(absl::string_view prefix) = 0;

  // What `uri` names, for comparing two places: the same string for two URIs of one place however spelled
  // (local stores resolve symbolic links). Default: NormalizedUri.
  virtual std::string Identity(absl::string_view uri);

  // Reads a whole (small) object such as config.json.
  absl::StatusOr<std::string> ReadAll(absl::string_view uri);
  // Writes and commits a whole (small) object.
  absl::Status WriteAll(absl::string_view uri, absl::string_view data);
};

// Joins a directory URI and a relative name with exactly one '/'.
std::string JoinUri(absl::string_view dir, absl::string_view name);
// The URI up to (not including) the last '/'.
std::string ParentUri(absl::string_view uri);
// `uri` with repeated slashes, "." and ".." segments collapsed (never above its root), so that two
// spellings of one place compare equal: "file:///m/./x//y/../z" -> "file:///m/x/z".
std::string NormalizedUri(absl::string_view uri);
// Whether `inner` is `outer` or lies under it, both normalized.
bool UriWithin(absl::string_view inner, absl::string_view outer);

}  // namespace lowbit

#endif  // LOWBIT_CORE_STORAGE_OBJECT_STORE_H_
