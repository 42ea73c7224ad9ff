// LocalObjectStore: file:// URIs (and plain paths) under a root directory.
//
// Nothing outside the root is reachable: "..", symlinks escaping the root and absolute paths outside it
// are rejected with PERMISSION_DENIED. Reads use mmap, cached per file, so a ranged read costs one
// copy and no syscall. Writers write "<name>.partial-<random>" beside the target and rename on Commit.
#ifndef LOWBIT_CORE_STORAGE_LOCAL_OBJECT_STORE_H_
#define LOWBIT_CORE_STORAGE_LOCAL_OBJECT_STORE_H_

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "core/storage/object_store.h"

namespace lowbit {

class LocalObjectStore final : public ObjectStore {
 public:
  struct Options {
    std::string root = "/";  ///< Directory that file:// URIs resolve under; "/" allows the whole filesystem.
  };
  static absl::StatusOr<std::unique_ptr<LocalObjectStore>> Create(const Options& options);
  ~LocalObjectStore() override;

  absl::StatusOr<ObjectInfo> Stat(absl::string_view uri) override;
  absl::StatusOr<std::string> ReadRange(absl::string_view uri, uint64_t offset,
                                        uint64_t length) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(absl::string_view uri) override;
  absl::Status Delete(absl::string_view uri) override;
  absl::Status CreateExclusive(absl::string_view uri, absl::string_view data) override;
  absl::Status Rename(absl::string_view from, absl::string_view to) override;
  absl::StatusOr<int> DiscardIncomplete(absl::string_view prefix) override;
  std::string Identity(absl::string_view uri) override;

  // Maps a URI ("file:///a/b", "/a/b" or "a/b" relative to the root) to a path inside the root.
  absl::StatusOr<std::string> ResolvePath(absl::string_view uri) const;
  const std::string& root() const { return root_; }

 private:
  struct Mapping;
  explicit LocalObjectStore(std::string root) : root_(std::move(root)) {}
  absl::StatusOr<std::shared_ptr<const Mapping>> Map(const std::string& path);
  // Removes the directories above `path` that are now empty, up to (not including) the root.
  void PruneEmptyParents(const std::string& path) const;

  const std::string root_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<const Mapping>> mappings_ ABSL_GUARDED_BY(mu_);
};

}  // namespace lowbit

#endif  // LOWBIT_CORE_STORAGE_LOCAL_OBJECT_STORE_H_
