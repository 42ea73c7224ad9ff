#include "server/job_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace lowbit::server {
namespace {

namespace fs = std::filesystem;

absl::Status Errno(int err, absl::string_view what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat("job store: cannot ", what, " ", path, ": ", std::strerror(err)));
}

// Writes `data` to `path` durably: a temporary file fsynced, renamed over `path`, the directory fsynced.
absl::Status WriteDurably(const std::string& dir, const std::string& path, const std::string& data) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno(errno, "create", tmp);
  for (size_t done = 0; done < data.size();) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      ::close(fd);
      ::unlink(tmp.c_str());
      return Errno(err, "write", tmp);
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Errno(err, "sync", tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return Errno(err, "rename", tmp);
  }
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return Errno(errno, "open", dir);
  const bool synced = ::fsync(dir_fd) == 0;
  const int err = errno;
  ::close(dir_fd);
  return synced ? absl::OkStatus() : Errno(err, "sync", dir);
}

}  // namespace

std::string JobId(const v1::Job& job) { return std::string(absl::StripPrefix(job.name(), "jobs/")); }

absl::StatusOr<std::unique_ptr<FileJobStore>> FileJobStore::Create(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create job store ", dir, ": ", ec.message()));
  return std::unique_ptr<FileJobStore>(new FileJobStore(dir));
}

std::string FileJobStore::PathOf(const std::string& job_id) const { return absl::StrCat(dir_, "/", job_id, ".json"); }

absl::Status FileJobStore::Save(const JobRecord& record) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  if (!google::protobuf::util::MessageToJsonString(record, &json, options).ok()) {
    return absl::InternalError(absl::StrCat("cannot encode job ", record.job().name()));
  }
  return WriteDurably(dir_, PathOf(JobId(record.job())), json);
}

absl::Status FileJobStore::Delete(const std::string& job_id) {
  if (::unlink(PathOf(job_id).c_str()) != 0 && errno != ENOENT) return Errno(errno, "delete", PathOf(job_id));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<JobRecord>> FileJobStore::LoadAll() {
  std::vector<JobRecord> records;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    const std::string path = entry.path().string();
    if (absl::EndsWith(path, ".json.tmp")) {  // a save that crashed before its rename
      fs::remove(entry.path(), ec);
      continue;
    }
    if (!absl::EndsWith(path, ".json")) continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;  // records written by newer versions stay readable
    JobRecord record;
    bool parsed = google::protobuf::util::JsonStringToMessage(text.str(), &record, options).ok();
    if (parsed && record.job().name().empty()) {  // a record of an older lowbitd: the Job alone
      parsed = google::protobuf::util::JsonStringToMessage(text.str(), record.mutable_job(), options).ok();
    }
    if (!parsed || record.job().name().empty()) return absl::DataLossError(absl::StrCat("corrupt job record ", path));
    records.push_back(std::move(record));
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list job store ", dir_, ": ", ec.message()));
  return records;
}

}  // namespace lowbit::server
