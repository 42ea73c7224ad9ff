#include "core/storage/local_object_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

namespace fs = std::filesystem;

absl::Status ErrnoError(int err, absl::string_view what, absl::string_view path) {
  const std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(err));
  if (err == ENOENT || err == ENOTDIR) return absl::NotFoundError(msg);
  if (err == EACCES || err == EPERM) return absl::PermissionDeniedError(msg);
  return absl::InternalError(msg);
}

bool IsWithin(const std::string& path, const std::string& root) {
  if (root == "/") return true;
  return path == root || absl::StartsWith(path, absl::StrCat(root, "/"));
}

class LocalObjectWriter final : public ObjectWriter {
 public:
  LocalObjectWriter(std::string target, std::string partial, int fd)
      : target_(std::move(target)), partial_(std::move(partial)), fd_(fd) {}
  ~LocalObjectWriter() override { Abort(); }

  absl::Status Append(absl::string_view data) override {
    if (fd_ < 0) return absl::FailedPreconditionError("writer is closed");
    while (!data.empty()) {
      const ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError(errno, "write", partial_);
      }
      data.remove_prefix(static_cast<size_t>(n));
      written_ += static_cast<uint64_t>(n);
    }
    return absl::OkStatus();
  }

  // Flushes to disk and closes, without the rename (for a file created in place).
  absl::Status Sync() {
    if (fd_ < 0) return absl::FailedPreconditionError("writer is closed");
    const int fd = fd_;
    fd_ = -1;
    if (::fsync(fd) != 0 || ::close(fd) != 0) return ErrnoError(errno, "flush", target_);
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    if (fd_ < 0) return absl::FailedPreconditionError("writer is closed");
    const int fd = fd_;
    fd_ = -1;
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
      const int err = errno;
      ::unlink(partial_.c_str());
      return ErrnoError(err, "flush", partial_);
    }
    if (::rename(partial_.c_str(), target_.c_str()) != 0) {
      const int err = errno;
      ::unlink(partial_.c_str());
      return ErrnoError(err, "rename to", target_);
    }
    return absl::OkStatus();
  }

  void Abort() override {
    if (fd_ < 0) return;
    ::close(fd_);
    fd_ = -1;
    ::unlink(partial_.c_str());
  }

  uint64_t bytes_written() const override { return written_; }

 private:
  const std::string target_;
  const std::string partial_;
  int fd_;
  uint64_t written_ = 0;
};

}  // namespace

struct LocalObjectStore::Mapping {
  const uint8_t* data = nullptr;
  size_t size = 0;
  ino_t inode = 0;
  int64_t mtime_ns = 0;
  ~Mapping() {
    if (data != nullptr && size > 0) ::munmap(const_cast<uint8_t*>(data), size);
  }
};

absl::StatusOr<std::unique_ptr<LocalObjectStore>> LocalObjectStore::Create(const Options& options) {
  std::error_code ec;
  fs::path root = fs::weakly_canonical(fs::absolute(options.root), ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("bad object-store root ", options.root));
  if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat("object-store root ", root.string(), " is not a directory"));
  }
  return std::unique_ptr<LocalObjectStore>(new LocalObjectStore(root.string()));
}

LocalObjectStore::~LocalObjectStore() = default;

absl::StatusOr<std::string> LocalObjectStore::ResolvePath(absl::string_view uri) const {
  absl::string_view path = uri;
  if (absl::ConsumePrefix(&path, "file://")) {
    if (!path.empty() && path.front() != '/') {
      return absl::InvalidArgumentError(absl::StrCat("file URI with a host is not supported: ", uri));
    }
  } else if (absl::StrContains(path, "://")) {
    return absl::InvalidArgumentError(absl::StrCat("not a file:// URI: ", uri));
  }
  if (path.empty()) return absl::InvalidArgumentError("empty path");
  // Longer paths cannot be opened (PATH_MAX), and checking them would cost time in their length.
  constexpr size_t kPathMax = 4096;
  if (path.size() > kPathMax) {
    return absl::InvalidArgumentError(absl::StrCat("path of ", path.size(), " bytes: longer than PATH_MAX (", kPathMax, ")"));
  }
  // Every path lives under the root: ".." may move up inside it, never past it.
  std::vector<absl::string_view> parts;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part != "..") {
      parts.push_back(part);
    } else if (parts.empty()) {
      return absl::PermissionDeniedError(absl::StrCat("path escapes the object-store root: ", uri));
    } else {
      parts.pop_back();
    }
  }
  std::string resolved = root_ == "/" ? "" : root_;
  for (absl::string_view part : parts) absl::StrAppend(&resolved, "/", part);
  if (resolved.empty()) resolved = "/";
  // A symlink may still point outside: compare the real path of the deepest existing ancestor.
  std::error_code ec;
  fs::path existing(resolved);
  while (!existing.empty() && !fs::exists(existing, ec)) existing = existing.parent_path();
  const std::string real = fs::canonical(existing, ec).string();
  if (ec || !IsWithin(real, root_)) {
    return absl::PermissionDeniedError(absl::StrCat("path escapes the object-store root: ", uri));
  }
  return resolved;
}

absl::StatusOr<ObjectInfo> LocalObjectStore::Stat(absl::string_view uri) {
  ASSIGN_OR_RETURN(std::string path, ResolvePath(uri));
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "stat", uri);
  if (!S_ISREG(st.st_mode)) return absl::NotFoundError(absl::StrCat("not a file: ", uri));
  return ObjectInfo{std::string(uri), static_cast<uint64_t>(st.st_size)};
}

absl::StatusOr<std::shared_ptr<const LocalObjectStore::Mapping>> LocalObjectStore::Map(
    const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return ErrnoError(errno, "stat", path);
  const int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  {
    absl::MutexLock lock(&mu_);
    auto it = mappings_.find(path);
    // A rewritten file (new inode, size or mtime) gets a fresh mapping.
    if (it != mappings_.end() && it->second->inode == st.st_ino &&
        it->second->size == static_cast<size_t>(st.st_size) && it->second->mtime_ns == mtime_ns) {
      return it->second;
    }
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->inode = st.st_ino;
  mapping->mtime_ns = mtime_ns;
  mapping->size = static_cast<size_t>(st.st_size);
  if (mapping->size > 0) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoError(errno, "open", path);
    void* data = ::mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    if (data == MAP_FAILED) return ErrnoError(err, "mmap", path);
    mapping->data = static_cast<const uint8_t*>(data);
  }
  absl::MutexLock lock(&mu_);
  if (mappings_.size() >= 64) mappings_.erase(mappings_.begin());  // bound open mappings in a long-lived server
  mappings_[path] = mapping;
  return mapping;
}

absl::StatusOr<std::string> LocalObjectStore::ReadRange(absl::string_view uri, uint64_t offset,
                                                        uint64_t length) {
  ASSIGN_OR_RETURN(std::string path, ResolvePath(uri));
  ASSIGN_OR_RETURN(std::shared_ptr<const Mapping> mapping, Map(path));
  if (offset > mapping->size || length > mapping->size - offset) {
    return absl::OutOfRangeError(absl::StrCat("range [", offset, ", ", offset + length, ") is past the end of ",
                                              uri, " (", mapping->size, " bytes)"));
  }
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  std::string bytes(reinterpret_cast<const char*>(mapping->data) + offset, length);
  // The pages stay in the page cache; dropping them from this process keeps RSS to what jobs hold.
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(mapping->data) + offset + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(mapping->data) + offset + length) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
  return bytes;
}

absl::StatusOr<std::vector<ObjectInfo>> LocalObjectStore::List(absl::string_view prefix) {
  ASSIGN_OR_RETURN(std::string path, ResolvePath(prefix));
  // A prefix names a directory ("dir/") or the start of file names inside one ("dir/model-").
  const bool is_dir_prefix = prefix.empty() || prefix.back() == '/';
  const fs::path dir = is_dir_prefix ? fs::path(path) : fs::path(path).parent_path();
  const std::string name_prefix = is_dir_prefix ? "" : fs::path(path).filename().string();
  std::vector<ObjectInfo> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  const std::string uri_dir = is_dir_prefix ? std::string(prefix) : ParentUri(prefix) + "/";
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file()) continue;
    const std::string rel = fs::relative(it->path(), dir).string();
    if (!absl::StartsWith(rel, name_prefix) || absl::StrContains(rel, ".partial-")) continue;
    out.push_back({uri_dir + rel, static_cast<uint64_t>(it->file_size())});
  }
  std::sort(out.begin(), out.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.uri < b.uri; });
  return out;
}

absl::StatusOr<std::unique_ptr<ObjectWriter>> LocalObjectStore::NewWriter(absl::string_view uri) {
  ASSIGN_OR_RETURN(std::string path, ResolvePath(uri));
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const std::string partial = absl::StrCat(path, ".partial-", rng() % 1000000000);
  // Another job's Delete may prune an empty parent between our mkdir and open: try again.
  int fd = -1;
  for (int attempt = 0; attempt < 3 && fd < 0; ++attempt) {
    std::error_code ec;
    fs::create_directories(fs::path(path).parent_path(), ec);
    if (ec) return absl::InternalError(absl::StrCat("cannot create directory for ", uri, ": ", ec.message()));
    fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 && errno != ENOENT) break;
  }
  if (fd < 0) return ErrnoError(errno, "create", partial);
  return std::unique_ptr<ObjectWriter>(new LocalObjectWriter(path, partial, fd));
}

void LocalObjectStore::PruneEmptyParents(const std::string& path) const {
  // Remove directories a write created and a delete or move left empty, never the root itself.
  fs::path dir = fs::path(path).parent_path();
  std::error_code ec;
  while (IsWithin(dir.string(), root_) && dir.string() != root_ && fs::is_empty(dir, ec) && !ec) {
    if (!fs::remove(dir, ec)) break;
    dir = dir.parent_path();
  }
}

absl::Status LocalObjectStore::Delete(absl::string_view uri) {
  ASSIGN_OR_RETURN(std::string path, ResolvePath(uri));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoError(errno, "delete", uri);
  PruneEmptyParents(path);
  return absl::OkStatus();
}

absl::Status LocalObjectStore::CreateExclusive(absl::string_view uri, absl::string_view data) {
  ASSIGN_OR_RETURN(std::string path, ResolvePath(uri));
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create directory for ", uri, ": ", ec.message()));
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    if (errno == EEXIST) return absl::AlreadyExistsError(absl::StrCat(uri, " already exists"));
    return ErrnoError(errno, "create", uri);
  }
  LocalObjectWriter writer(path, path, fd);  // writes in place: the name is already taken by us
  absl::Status written = writer.Append(data);
  if (written.ok()) written = writer.Sync();
  if (!written.ok()) ::unlink(path.c_str());
  return written;
}

absl::Status LocalObjectStore::Rename(absl::string_view from, absl::string_view to) {
  ASSIGN_OR_RETURN(std::string source, ResolvePath(from));
  ASSIGN_OR_RETURN(std::string target, ResolvePath(to));
  std::error_code ec;
  fs::create_directories(fs::path(target).parent_path(), ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create directory for ", to, ": ", ec.message()));
  if (::rename(source.c_str(), target.c_str()) != 0) return ErrnoError(errno, "move", from);
  PruneEmptyParents(source);
  return absl::OkStatus();
}

std::string LocalObjectStore::Identity(absl::string_view uri) {
  absl::StatusOr<std::string> path = ResolvePath(uri);
  if (!path.ok()) return NormalizedUri(uri);
  // The canonical path of the longest part that exists (links resolved), then the rest as spelled.
  std::error_code ec;
  const fs::path canonical = fs::weakly_canonical(*path, ec);
  return ec ? NormalizedUri(*path) : canonical.string();
}

absl::StatusOr<int> LocalObjectStore::DiscardIncomplete(absl::string_view prefix) {
  ASSIGN_OR_RETURN(std::string path, ResolvePath(prefix));
  const fs::path dir = prefix.empty() || prefix.back() == '/' ? fs::path(path) : fs::path(path).parent_path();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return 0;
  std::vector<std::string> partial;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (it->is_regular_file() && absl::StrContains(it->path().filename().string(), ".partial-")) {
      partial.push_back(it->path().string());
    }
  }
  for (const std::string& p : partial) {
    ::unlink(p.c_str());
    PruneEmptyParents(p);
  }
  // Directories an aborted writer made and left empty (deepest first; the prefix's own stays).
  std::vector<fs::path> dirs;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory()) dirs.push_back(it->path());
  }
  std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) { return a.string().size() > b.string().size(); });
  for (const fs::path& d : dirs) {
    if (fs::is_empty(d, ec) && !ec) fs::remove(d, ec);
  }
  return static_cast<int>(partial.size());
}

}  // namespace lowbit
