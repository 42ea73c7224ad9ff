// Who may call lowbitd: bearer tokens checked on every RPC but health, and on /metrics.
//
// Two kinds of credentials, either or both:
// - a token file: one opaque token per line (blank lines and '#' comments ignored), compared in constant
//   time by their SHA-256; the file is read again when it changes, so tokens rotate without a restart;
// - a JWKS file (RFC 7517): JWTs (RFC 7519) signed RS256 or ES256 by one of its keys, with `exp` in the
//   future, `nbf` in the past, and, when configured, the expected `iss` and `aud`.
// With neither configured every call is allowed. Thread-safe.
#ifndef LOWBIT_SERVER_AUTH_H_
#define LOWBIT_SERVER_AUTH_H_

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace lowbit::server {

class Authenticator {
 public:
  struct Options {
    std::string token_file;  ///< one token per line; "" = none
    std::string jwks_file;   ///< verification keys for JWTs; "" = none
    std::string issuer;      ///< required `iss` of JWTs; "" = any
    std::string audience;    ///< required in `aud` of JWTs; "" = any
  };
  // INVALID_ARGUMENT for a file that cannot be read or parsed.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Create(const Options& options);
  ~Authenticator();

  bool enabled() const { return !options_.token_file.empty() || !options_.jwks_file.empty(); }
  // OK for "Bearer <credential>" that the token file or a JWKS key accepts; UNAUTHENTICATED otherwise.
  absl::Status CheckAuthorization(absl::string_view header) const;
  // The same for a call's "authorization" metadata.
  absl::Status Check(const grpc::ServerContextBase& context) const;

 private:
  explicit Authenticator(const Options& options);
  struct Keys;
  absl::Status Reload() const;  // re-reads files whose modification time changed
  absl::Status CheckToken(absl::string_view credential) const ABSL_SHARED_LOCKS_REQUIRED(mu_);
  absl::Status CheckJwt(absl::string_view credential) const ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  mutable std::vector<std::string> token_hashes_ ABSL_GUARDED_BY(mu_);  // SHA-256 of each token
  mutable std::unique_ptr<Keys> keys_ ABSL_GUARDED_BY(mu_);
  mutable int64_t token_file_mtime_ ABSL_GUARDED_BY(mu_) = -1, jwks_file_mtime_ ABSL_GUARDED_BY(mu_) = -1;
  mutable absl::Time checked_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
};

// TLS for the gRPC port from PEM files, re-read when they change. With `client_ca`, clients must present a
// certificate that CA signed (mutual TLS).
struct TlsFiles {
  std::string cert;       ///< server certificate chain
  std::string key;        ///< its private key
  std::string client_ca;  ///< CA bundle for client certificates; "" = clients are not asked for one
  bool enabled() const { return !cert.empty(); }
};
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(const TlsFiles& tls);

}  // namespace lowbit::server

#endif  // LOWBIT_SERVER_AUTH_H_
