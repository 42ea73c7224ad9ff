// OutputTransaction: the objects one job writes, deleted again unless the job commits.
//
// Every output of lowbit appears whole or not at all: a failed or cancelled job leaves nothing
// behind. Not thread-safe; owned by the job's thread.
#ifndef LOWBIT_CORE_JOB_OUTPUT_TRANSACTION_H_
#define LOWBIT_CORE_JOB_OUTPUT_TRANSACTION_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/job/report.h"
#include "core/storage/object_store.h"
#include "core/util/status_macros.h"

namespace lowbit {

// OK if the output directory `dir` holds no objects. Otherwise ALREADY_EXISTS, unless `overwrite`: then
// the old commit marker `report_name` is deleted first, so a crash mid-job never leaves an old report
// beside new files.
inline absl::Status CheckDestination(ObjectStore* store, const std::string& dir, bool overwrite,
                                     absl::string_view report_name) {
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> existing, store->List(JoinUri(dir, "")));
  if (existing.empty()) return absl::OkStatus();
  if (!overwrite) {
    return absl::AlreadyExistsError(absl::StrCat("destination ", dir, " already holds ", existing.size(),
                                                 " object(s); set overwrite to replace them"));
  }
  return report_name.empty() ? absl::OkStatus() : store->Delete(JoinUri(dir, report_name));
}

class OutputTransaction {
 public:
  OutputTransaction(ObjectStore* store, std::string dir) : store_(store), dir_(std::move(dir)) {}
  ~OutputTransaction() {
    if (committed_) return;
    for (const std::string& uri : written_) store_->Delete(uri).IgnoreError();
  }
  std::string Uri(absl::string_view name) const { return JoinUri(dir_, name); }
  absl::StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(absl::string_view name) {
    written_.push_back(Uri(name));
    return store_->NewWriter(written_.back());
  }
  absl::Status WriteAll(absl::string_view name, absl::string_view data, JobReport* report) {
    written_.push_back(Uri(name));
    RETURN_IF_ERROR(store_->WriteAll(written_.back(), data));
    if (report != nullptr) {
      report->files.push_back({std::string(name), data.size()});
      report->summary.bytes_written += data.size();
    }
    return absl::OkStatus();
  }
  void Commit() { committed_ = true; }

 private:
  ObjectStore* const store_;
  const std::string dir_;
  std::vector<std::string> written_;
  bool committed_ = false;
};

}  // namespace lowbit

#endif  // LOWBIT_CORE_JOB_OUTPUT_TRANSACTION_H_
