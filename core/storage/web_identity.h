// Credentials for a web identity (EKS IAM Roles for Service Accounts, or any OIDC token AWS trusts):
// STS AssumeRoleWithWebIdentity for AWS_ROLE_ARN with the token in AWS_WEB_IDENTITY_TOKEN_FILE, as the
// AWS SDKs do it (botocore's AssumeRoleWithWebIdentityCredentialFetcher). The temporary credentials are
// refreshed five minutes before they expire, re-reading the token file each time (the kubelet rotates
// it). The request is unsigned: the token is the proof. Thread-safe.
#ifndef LOWBIT_CORE_STORAGE_WEB_IDENTITY_H_
#define LOWBIT_CORE_STORAGE_WEB_IDENTITY_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/storage/http_transport.h"
#include "core/storage/sigv4.h"

namespace lowbit {

class WebIdentityCredentials {
 public:
  struct Options {
    std::string role_arn;
    std::string token_file;
    std::string session_name;  ///< AWS_ROLE_SESSION_NAME, else "lowbit-<time>"
    std::string sts_endpoint;  ///< AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL, else https://sts.<region>.amazonaws.com
    HttpTimeouts timeouts = {absl::Seconds(5), absl::Seconds(30)};
  };
  // The options the environment asks for, or nullopt when AWS_ROLE_ARN or AWS_WEB_IDENTITY_TOKEN_FILE is unset.
  static std::optional<Options> FromEnvironment(const std::string& region,
                                                const std::function<const char*(const char*)>& getenv = ::getenv);

  explicit WebIdentityCredentials(Options options) : options_(std::move(options)) {}

  // Valid credentials, from STS when the cached ones are missing or about to expire. PERMISSION_DENIED
  // with STS's error code for a token or role STS refuses (never the token itself).
  absl::StatusOr<AwsCredentials> Get();

 private:
  absl::StatusOr<AwsCredentials> Assume(absl::Time* expiration) const;

  const Options options_;
  absl::Mutex mu_;
  AwsCredentials cached_ ABSL_GUARDED_BY(mu_);
  absl::Time expiration_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

}  // namespace lowbit

#endif  // LOWBIT_CORE_STORAGE_WEB_IDENTITY_H_
