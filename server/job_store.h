// JobStore: durable job records, so jobs survive a restart of lowbitd.
//
// FileJobStore keeps one JSON file per job (protobuf's JSON mapping of lowbit.internal.JobRecord) in a
// directory. A save is durable when it returns OK: the file is written beside its final name, fsynced,
// renamed over it, and the directory fsynced, so a crash leaves either the old record or the new one.
// Thread-safe.
#ifndef LOWBIT_SERVER_JOB_STORE_H_
#define LOWBIT_SERVER_JOB_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lowbit/internal/job_record.pb.h"

namespace lowbit::server {

using internal::JobRecord;

class JobStore {
 public:
  virtual ~JobStore() = default;
  virtual absl::Status Save(const JobRecord& record) = 0;
  virtual absl::Status Delete(const std::string& job_id) = 0;
  virtual absl::StatusOr<std::vector<JobRecord>> LoadAll() = 0;
};

class FileJobStore final : public JobStore {
 public:
  // Creates `dir` if needed.
  static absl::StatusOr<std::unique_ptr<FileJobStore>> Create(const std::string& dir);
  absl::Status Save(const JobRecord& record) override;
  absl::Status Delete(const std::string& job_id) override;
  absl::StatusOr<std::vector<JobRecord>> LoadAll() override;

 private:
  explicit FileJobStore(std::string dir) : dir_(std::move(dir)) {}
  std::string PathOf(const std::string& job_id) const;
  const std::string dir_;
};

// The id in a job name ("jobs/{id}" -> "{id}").
std::string JobId(const v1::Job& job);

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_JOB_STORE_H_
