// RoutingObjectStore: one ObjectStore over several, chosen by URI scheme: s3:// goes to S3, file:// and
// plain paths to the local store. A job may read from one and write to the other.
#ifndef LOWBIT_CORE_STORAGE_ROUTING_OBJECT_STORE_H_
#define LOWBIT_CORE_STORAGE_ROUTING_OBJECT_STORE_H_

#include <memory>

#include "core/storage/aws_config.h"
#include "core/storage/local_object_store.h"
#include "core/storage/s3_object_store.h"

namespace lowbit {

class RoutingObjectStore final : public ObjectStore {
 public:
  // `s3` may be null; then s3:// URIs fail with `s3_unavailable` (e.g. "no AWS credentials").
  RoutingObjectStore(std::unique_ptr<LocalObjectStore> local, std::unique_ptr<S3ObjectStore> s3,
                     absl::Status s3_unavailable = absl::FailedPreconditionError("S3 is not configured"))
      : local_(std::move(local)), s3_(std::move(s3)), s3_unavailable_(std::move(s3_unavailable)) {}

  absl::StatusOr<ObjectInfo> Stat(absl::string_view uri) override;
  absl::StatusOr<std::string> ReadRange(absl::string_view uri, uint64_t offset, uint64_t length) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(absl::string_view uri) override;
  absl::Status Delete(absl::string_view uri) override;
  absl::Status CreateExclusive(absl::string_view uri, absl::string_view data) override;
  absl::Status Rename(absl::string_view from, absl::string_view to) override;
  absl::StatusOr<int> DiscardIncomplete(absl::string_view prefix) override;
  std::string Identity(absl::string_view uri) override;

 private:
  absl::StatusOr<ObjectStore*> For(absl::string_view uri);
  const std::unique_ptr<LocalObjectStore> local_;
  const std::unique_ptr<S3ObjectStore> s3_;
  const absl::Status s3_unavailable_;
};

struct StoreConfig {
  std::string local_root = "/";  ///< root of file:// URIs and plain paths
  std::string s3_endpoint;       ///< overrides AWS_ENDPOINT_URL[_S3] / the profile's endpoint_url
  std::string s3_region;         ///< overrides AWS_REGION / the profile's region; default us-east-1
  S3ObjectStore::Addressing s3_addressing = S3ObjectStore::Addressing::kAuto;
  StoreRequestObserver* observer = nullptr;  ///< not owned
};

// The local store plus, when AWS credentials are found (see aws_config.h), an S3 store. Without
// credentials s3:// URIs fail with FAILED_PRECONDITION saying so.
absl::StatusOr<std::unique_ptr<RoutingObjectStore>> CreateObjectStore(const StoreConfig& config);

}  // namespace lowbit

#endif  // LOWBIT_CORE_STORAGE_ROUTING_OBJECT_STORE_H_
