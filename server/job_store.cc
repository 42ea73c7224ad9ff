#include "server/job_store.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace lowbit::server {

namespace fs = std::filesystem;

std::string JobId(const v1::Job& job) { return std::string(absl::StripPrefix(job.name(), "jobs/")); }

absl::StatusOr<std::unique_ptr<FileJobStore>> FileJobStore::Create(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create job store ", dir, ": ", ec.message()));
  return std::unique_ptr<FileJobStore>(new FileJobStore(dir));
}

std::string FileJobStore::PathOf(const std::string& job_id) const { return absl::StrCat(dir_, "/", job_id, ".json"); }

absl::Status FileJobStore::Save(const v1::Job& job) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  if (!google::protobuf::util::MessageToJsonString(job, &json, options).ok()) {
    return absl::InternalError(absl::StrCat("cannot encode job ", job.name()));
  }
  const std::string path = PathOf(JobId(job));
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << json;
    if (!out.good()) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", ec.message()));
  return absl::OkStatus();
}

absl::Status FileJobStore::Delete(const std::string& job_id) {
  std::error_code ec;
  fs::remove(PathOf(job_id), ec);
  return ec ? absl::InternalError(ec.message()) : absl::OkStatus();
}

absl::StatusOr<std::vector<v1::Job>> FileJobStore::LoadAll() {
  std::vector<v1::Job> jobs;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir_, ec)) {
    if (!absl::EndsWith(entry.path().string(), ".json")) continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    v1::Job job;
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;  // records written by newer versions stay readable
    if (!google::protobuf::util::JsonStringToMessage(text.str(), &job, options).ok()) {
      return absl::DataLossError(absl::StrCat("corrupt job record ", entry.path().string()));
    }
    jobs.push_back(std::move(job));
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list job store ", dir_, ": ", ec.message()));
  return jobs;
}

}  // namespace lowbit::server
