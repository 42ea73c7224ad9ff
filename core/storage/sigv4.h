// AWS Signature Version 4 for S3, as one pure function: request fields and credentials in, headers out.
// No I/O and no clock (the time is an argument), so it is tested against AWS's published examples
// and against botocore's signer on the same requests. Secrets never leave this function.
#ifndef LOWBIT_CORE_STORAGE_SIGV4_H_
#define LOWBIT_CORE_STORAGE_SIGV4_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace lowbit {

struct AwsCredentials {
  std::string access_key_id;
  std::string secret_access_key;  ///< secret: never logged, never in an error or report
  std::string session_token;      ///< optional (temporary credentials)
  bool empty() const { return access_key_id.empty() || secret_access_key.empty(); }
};

struct SigV4Request {
  std::string method;                                       ///< "GET", "PUT", ...
  std::string host;                                         ///< as sent in the Host header, with a non-default port
  std::string path;                                         ///< URI-encoded path, e.g. "/bucket/a%20b.txt"
  std::vector<std::pair<std::string, std::string>> query;   ///< raw (not encoded) names and values
  std::map<std::string, std::string> headers;               ///< extra headers to sign; names lowercase
  std::string payload_sha256;                               ///< hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"
};

// Headers to add to the request: authorization, x-amz-date, x-amz-content-sha256 and, with a session
// token, x-amz-security-token (all signed).
std::map<std::string, std::string> SignV4(const SigV4Request& request, const AwsCredentials& credentials,
                                          absl::string_view region, absl::string_view service, absl::Time now);

// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters kept, '/' kept only if asked.
std::string UriEncode(absl::string_view s, bool keep_slash);
// The canonical query string: encoded names and values, sorted.
std::string CanonicalQuery(const std::vector<std::pair<std::string, std::string>>& query);
std::string Sha256Hex(absl::string_view data);
// Base64 MD5 of data: the Content-MD5 header S3 checks each uploaded part against.
std::string ContentMd5(absl::string_view data);

}  // namespace lowbit

#endif  // LOWBIT_CORE_STORAGE_SIGV4_H_
