#include "core/storage/routing_object_store.h"

#include <cstdlib>
#include <memory>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/storage/web_identity.h"
#include "core/util/status_macros.h"

namespace lowbit {

absl::StatusOr<ObjectStore*> RoutingObjectStore::For(absl::string_view uri) {
  if (absl::StartsWith(uri, "s3://")) {
    if (s3_ == nullptr) return absl::Status(s3_unavailable_.code(), absl::StrCat(uri, ": ", s3_unavailable_.message()));
    return s3_.get();
  }
  if (local_ == nullptr) return absl::FailedPreconditionError(absl::StrCat(uri, ": no local object store"));
  return local_.get();
}

absl::StatusOr<ObjectInfo> RoutingObjectStore::Stat(absl::string_view uri) {
  ASSIGN_OR_RETURN(ObjectStore * store, For(uri));
  return store->Stat(uri);
}

absl::StatusOr<std::string> RoutingObjectStore::ReadRange(absl::string_view uri, uint64_t offset, uint64_t length) {
  ASSIGN_OR_RETURN(ObjectStore * store, For(uri));
  return store->ReadRange(uri, offset, length);
}

absl::StatusOr<std::vector<ObjectInfo>> RoutingObjectStore::List(absl::string_view prefix) {
  ASSIGN_OR_RETURN(ObjectStore * store, For(prefix));
  return store->List(prefix);
}

absl::StatusOr<std::unique_ptr<ObjectWriter>> RoutingObjectStore::NewWriter(absl::string_view uri) {
  ASSIGN_OR_RETURN(ObjectStore * store, For(uri));
  return store->NewWriter(uri);
}

absl::Status RoutingObjectStore::Delete(absl::string_view uri) {
  ASSIGN_OR_RETURN(ObjectStore * store, For(uri));
  return store->Delete(uri);
}

absl::StatusOr<std::unique_ptr<RoutingObjectStore>> CreateObjectStore(const StoreConfig& config) {
  ASSIGN_OR_RETURN(std::unique_ptr<LocalObjectStore> local, LocalObjectStore::Create({config.local_root}));
  ASSIGN_OR_RETURN(AwsConfig aws, LoadAwsConfig());
  S3ObjectStore::Options options;
  options.endpoint = config.s3_endpoint.empty() ? aws.endpoint_url : config.s3_endpoint;
  options.region = !config.s3_region.empty() ? config.s3_region : (aws.region.empty() ? "us-east-1" : aws.region);
  // The SDKs' order: keys in the environment, then a web identity (IRSA), then the shared files.
  std::optional<WebIdentityCredentials::Options> web_identity = WebIdentityCredentials::FromEnvironment(options.region);
  if (web_identity && getenv("AWS_ACCESS_KEY_ID") == nullptr) {
    auto source = std::make_shared<WebIdentityCredentials>(*std::move(web_identity));
    options.credential_source = [source] { return source->Get(); };
  } else {
    options.credentials = aws.credentials;
  }
  options.addressing = config.s3_addressing;
  options.observer = config.observer;
  absl::StatusOr<std::unique_ptr<S3ObjectStore>> s3 = S3ObjectStore::Create(options);
  if (!s3.ok()) return std::make_unique<RoutingObjectStore>(std::move(local), nullptr, s3.status());
  return std::make_unique<RoutingObjectStore>(std::move(local), *std::move(s3));
}

absl::Status RoutingObjectStore::CreateExclusive(absl::string_view uri, absl::string_view data) {
  ASSIGN_OR_RETURN(ObjectStore * store, For(uri));
  return store->CreateExclusive(uri, data);
}

absl::Status RoutingObjectStore::Rename(absl::string_view from, absl::string_view to) {
  ASSIGN_OR_RETURN(ObjectStore * store, For(from));
  ASSIGN_OR_RETURN(ObjectStore * target, For(to));
  if (store != target) return absl::InvalidArgumentError(absl::StrCat("cannot move ", from, " to another store: ", to));
  return store->Rename(from, to);
}

std::string RoutingObjectStore::Identity(absl::string_view uri) {
  absl::StatusOr<ObjectStore*> store = For(uri);
  return store.ok() ? (*store)->Identity(uri) : NormalizedUri(uri);
}

absl::StatusOr<int> RoutingObjectStore::DiscardIncomplete(absl::string_view prefix) {
  ASSIGN_OR_RETURN(ObjectStore * store, For(prefix));
  return store->DiscardIncomplete(prefix);
}

}  // namespace lowbit
