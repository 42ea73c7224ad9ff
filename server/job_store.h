// JobStore: durable job records, so jobs survive a restart of lowbitd.
//
// FileJobStore keeps one JSON file per job (protobuf's JSON mapping of lowbit.v1.Job) in a directory,
// replaced atomically on each save. Thread-safe.
#ifndef LOWBIT_SERVER_JOB_STORE_H_
#define LOWBIT_SERVER_JOB_STORE_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "lowbit/v1/quantizer.pb.h"

namespace lowbit::server {

class JobStore {
 public:
  virtual ~JobStore() = default;
  virtual absl::Status Save(const v1::Job& job) = 0;
  virtual absl::Status Delete(const std::string& job_id) = 0;
  virtual absl::StatusOr<std::vector<v1::Job>> LoadAll() = 0;
};

class FileJobStore final : public JobStore {
 public:
  // Creates `dir` if needed.
  static absl::StatusOr<std::unique_ptr<FileJobStore>> Create(const std::string& dir);
  absl::Status Save(const v1::Job& job) override;
  absl::Status Delete(const std::string& job_id) override;
  absl::StatusOr<std::vector<v1::Job>> LoadAll() override;

 private:
  explicit FileJobStore(std::string dir) : dir_(std::move(dir)) {}
  std::string PathOf(const std::string& job_id) const;
  const std::string dir_;
};

// The id in a job name ("jobs/{id}" -> "{id}").
std::string JobId(const v1::Job& job);

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_JOB_STORE_H_
