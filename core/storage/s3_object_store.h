// S3ObjectStore: s3://bucket/key objects on AWS S3 or any S3-compatible server (MinIO, Ceph RGW, R2, ...).
//
// Reads are ranged GETs; writes are multipart uploads of `part_size` parts sent as data is appended
// (each with Content-MD5, so the server rejects a corrupted part), completed on Commit and aborted on
// Abort, so an object appears whole or not at all. Bodies are signed as UNSIGNED-PAYLOAD: Content-MD5
// already protects them, and hashing every byte twice would cost more than the transfer on loopback. Every request is signed with SigV4 and retried with
// exponential backoff and full jitter on 5xx, 429/SlowDown, timeouts and connection resets; 4xx errors
// (bad credentials, missing objects) fail at once with a message naming the URI, never a secret.
// Thread-safe.
#ifndef LOWBIT_CORE_STORAGE_S3_OBJECT_STORE_H_
#define LOWBIT_CORE_STORAGE_S3_OBJECT_STORE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/storage/http_transport.h"
#include "core/storage/object_store.h"
#include "core/storage/sigv4.h"

namespace lowbit {

// Told about every S3 request, for metrics. Implementations must be thread-safe.
class StoreRequestObserver {
 public:
  virtual ~StoreRequestObserver() = default;
  // `op`: head, get, put, list, delete, create_multipart, upload_part, complete_multipart, abort_multipart.
  // `code`: the HTTP status, or 0 when the transport failed.
  virtual void OnRequest(absl::string_view op, int code) = 0;
  virtual void OnRetry(absl::string_view op) = 0;
};

class S3ObjectStore final : public ObjectStore {
 public:
  enum class Addressing {
    kAuto,         ///< virtual-host for AWS endpoints, path-style for custom endpoints
    kPath,         ///< http://endpoint/bucket/key
    kVirtualHost,  ///< http://bucket.endpoint/key
  };
  struct Options {
    std::string endpoint;            ///< e.g. "http://127.0.0.1:9000"; "" = https://s3.<region>.amazonaws.com
    std::string region = "us-east-1";
    Addressing addressing = Addressing::kAuto;
    AwsCredentials credentials;      ///< required unless credential_source is set
    // Temporary credentials that renew themselves (core/storage/web_identity.h); asked before each request.
    std::function<absl::StatusOr<AwsCredentials>()> credential_source;
    int max_attempts = 6;            ///< per request, including the first
    absl::Duration initial_backoff = absl::Milliseconds(100);  ///< doubled per retry, full jitter
    absl::Duration max_backoff = absl::Seconds(5);
    HttpTimeouts timeouts;
    uint64_t part_size = 8 << 20;    ///< bytes per multipart part; S3 needs >= 5 MiB for all but the last
    StoreRequestObserver* observer = nullptr;  ///< not owned; may be null
  };
  static absl::StatusOr<std::unique_ptr<S3ObjectStore>> Create(const Options& options);

  absl::StatusOr<ObjectInfo> Stat(absl::string_view uri) override;
  absl::StatusOr<std::string> ReadRange(absl::string_view uri, uint64_t offset, uint64_t length) override;
  absl::StatusOr<std::vector<ObjectInfo>> List(absl::string_view prefix) override;
  absl::StatusOr<std::unique_ptr<ObjectWriter>> NewWriter(absl::string_view uri) override;
  absl::Status Delete(absl::string_view uri) override;
  absl::Status CreateExclusive(absl::string_view uri, absl::string_view data) override;
  absl::Status Rename(absl::string_view from, absl::string_view to) override;
  absl::StatusOr<int> DiscardIncomplete(absl::string_view prefix) override;

  // One signed request with retries. `key` may be empty (bucket-level requests). Public for the writer.
  struct Call {
    std::string op;
    std::string method;
    std::string bucket;
    std::string key;
    std::vector<std::pair<std::string, std::string>> query;
    std::map<std::string, std::string> headers;
    absl::string_view body;
    std::string uri;  ///< for error messages
    size_t expected_response_bytes = 0;
  };
  absl::StatusOr<HttpResponse> Send(const Call& call);
  const Options& options() const { return options_; }

 private:
  explicit S3ObjectStore(const Options& options) : options_(options) {}
  const Options options_;
};

// INVALID_ARGUMENT unless `bucket` follows AWS's naming rules for general-purpose buckets.
absl::Status ValidateBucketName(absl::string_view bucket);
// Splits "s3://bucket/key" into bucket and key. INVALID_ARGUMENT for anything else, for a bucket name
// ValidateBucketName refuses, and for a key over 1024 bytes.
absl::Status ParseS3Uri(absl::string_view uri, std::string* bucket, std::string* key);

}  // namespace lowbit

#endif  // LOWBIT_CORE_STORAGE_S3_OBJECT_STORE_H_
