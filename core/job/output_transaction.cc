#include "core/job/output_transaction.h"

#include <unistd.h>

#include <algorithm>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// The owner named by a lock object's text; empty if it is not a lock lowbit wrote.
std::string OwnerOf(const std::string& text) {
  nlohmann::json lock = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!lock.is_object() || !lock.contains("owner") || !lock["owner"].is_string()) return "";
  return lock["owner"].get<std::string>();
}

bool IsBookkeeping(absl::string_view dir, absl::string_view uri) {
  return uri == JoinUri(dir, kLockObject) || absl::StartsWith(uri, JoinUri(dir, absl::StrCat(kStagingDir, "/")));
}

}  // namespace

std::string NewLockOwner() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::random_device random;
  return absl::StrFormat("lowbit@%s/%d/%08x", host, ::getpid(), random());
}

absl::Status LockDestination(ObjectStore* store, const std::string& dir, const std::string& owner, bool* held_before) {
  const std::string lock_uri = JoinUri(dir, kLockObject);
  const nlohmann::json lock = {{"owner", owner}, {"created", absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone())}};
  absl::Status created = store->CreateExclusive(lock_uri, lock.dump());
  if (created.ok()) {
    *held_before = false;
    return absl::OkStatus();
  }
  if (!absl::IsAlreadyExists(created)) return created;
  // Someone holds it: this job after an interruption (or a retried create whose first try landed), or another.
  ASSIGN_OR_RETURN(const std::string text, store->ReadAll(lock_uri));
  const std::string holder = OwnerOf(text);
  if (holder == owner) {
    *held_before = true;
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "destination_uri: ", dir, " is in use by ", holder.empty() ? "an unknown writer" : holder, " (lock object ",
      lock_uri, "); if that job is gone for good, delete the lock object"));
}

absl::Status UnlockDestination(ObjectStore* store, const std::string& dir, const std::string& owner) {
  const std::string lock_uri = JoinUri(dir, kLockObject);
  absl::StatusOr<std::string> text = store->ReadAll(lock_uri);
  if (absl::IsNotFound(text.status())) return absl::OkStatus();
  RETURN_IF_ERROR(text.status());
  if (OwnerOf(*text) != owner) return absl::OkStatus();  // not ours: never release another job's lock
  return store->Delete(lock_uri);
}

absl::StatusOr<std::vector<ObjectInfo>> OutputObjects(ObjectStore* store, const std::string& dir) {
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> objects, store->List(JoinUri(dir, "")));
  objects.erase(std::remove_if(objects.begin(), objects.end(), [&](const ObjectInfo& o) { return IsBookkeeping(dir, o.uri); }),
                objects.end());
  return objects;
}

absl::Status CheckDestination(ObjectStore* store, const std::string& dir, bool overwrite) {
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> existing, OutputObjects(store, dir));
  if (existing.empty() || overwrite) return absl::OkStatus();
  return absl::AlreadyExistsError(absl::StrCat("destination ", dir, " already holds ", existing.size(),
                                               " object(s); set overwrite to replace them"));
}

absl::Status DiscardStaging(ObjectStore* store, const std::string& dir) {
  RETURN_IF_ERROR(store->DiscardIncomplete(JoinUri(dir, "")).status());
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> staged, store->List(JoinUri(JoinUri(dir, kStagingDir), "")));
  for (const ObjectInfo& o : staged) RETURN_IF_ERROR(store->Delete(o.uri));
  return absl::OkStatus();
}

absl::Status ReleaseDestination(ObjectStore* store, const std::string& dir, const std::string& owner) {
  const std::string lock_uri = JoinUri(dir, kLockObject);
  absl::StatusOr<std::string> text = store->ReadAll(lock_uri);
  if (!text.ok() && !absl::IsNotFound(text.status())) return text.status();
  if (text.ok() && OwnerOf(*text) != owner) return absl::OkStatus();  // another job's: leave it all alone
  RETURN_IF_ERROR(DiscardStaging(store, dir));
  return text.ok() ? store->Delete(lock_uri) : absl::OkStatus();
}

OutputTransaction::OutputTransaction(ObjectStore* store, std::string dir, bool keep_on_failure)
    : store_(store), dir_(std::move(dir)), staging_(JoinUri(dir_, kStagingDir)), keep_on_failure_(keep_on_failure) {}

OutputTransaction::~OutputTransaction() {
  if (committed_ || keep_on_failure_) return;
  for (const std::string& name : staged_) store_->Delete(JoinUri(staging_, name)).IgnoreError();
}

absl::Status OutputTransaction::Begin(const std::vector<std::string>& keep) {
  RETURN_IF_ERROR(store_->DiscardIncomplete(JoinUri(dir_, "")).status());
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> leftovers, store_->List(JoinUri(staging_, "")));
  for (const ObjectInfo& o : leftovers) {
    const std::string name = o.uri.substr(JoinUri(staging_, "").size());
    if (std::find(keep.begin(), keep.end(), name) == keep.end()) RETURN_IF_ERROR(store_->Delete(o.uri));
  }
  for (const std::string& name : keep) {  // moved into place at the commit like everything this run writes
    if (!absl::StartsWith(name, absl::StrCat(kScratchDir, "/"))) staged_.push_back(name);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ObjectWriter>> OutputTransaction::NewWriter(absl::string_view name) {
  staged_.emplace_back(name);
  return store_->NewWriter(JoinUri(staging_, name));
}

absl::Status OutputTransaction::WriteAll(absl::string_view name, absl::string_view data, JobReport* report) {
  staged_.emplace_back(name);
  RETURN_IF_ERROR(store_->WriteAll(JoinUri(staging_, name), data));
  if (report != nullptr) {
    report->files.push_back({std::string(name), data.size()});
    report->summary.bytes_written += data.size();
  }
  return absl::OkStatus();
}

absl::Status OutputTransaction::Commit(absl::string_view report_name) {
  // The old output stops looking finished before any of it goes.
  if (!report_name.empty()) RETURN_IF_ERROR(store_->Delete(JoinUri(dir_, report_name)));
  std::vector<std::string> incoming;
  for (const std::string& name : staged_) incoming.push_back(JoinUri(dir_, name));
  ASSIGN_OR_RETURN(std::vector<ObjectInfo> old, OutputObjects(store_, dir_));
  for (const ObjectInfo& o : old) {
    if (std::find(incoming.begin(), incoming.end(), o.uri) == incoming.end()) RETURN_IF_ERROR(store_->Delete(o.uri));
  }
  std::vector<std::string> order = staged_;
  std::stable_partition(order.begin(), order.end(), [&](const std::string& name) { return name != report_name; });
  for (const std::string& name : order) RETURN_IF_ERROR(store_->Rename(JoinUri(staging_, name), JoinUri(dir_, name)));
  committed_ = true;
  return absl::OkStatus();
}

}  // namespace lowbit
