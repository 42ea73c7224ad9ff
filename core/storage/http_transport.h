// HttpTransport: one HTTP request over libcurl, nothing more (no signing, no retries). Connections are
// reused per thread. Transport failures (connect errors, resets, timeouts) come back as UNAVAILABLE or
// DEADLINE_EXCEEDED; any HTTP response, even 5xx, is a successful transport.
#ifndef LOWBIT_CORE_STORAGE_HTTP_TRANSPORT_H_
#define LOWBIT_CORE_STORAGE_HTTP_TRANSPORT_H_

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace lowbit {

struct HttpRequest {
  std::string method;                          ///< GET, HEAD, PUT, POST, DELETE
  std::string url;
  std::map<std::string, std::string> headers;  ///< sent as given
  absl::string_view body;                      ///< not owned
  size_t expected_response_bytes = 0;          ///< reserved up front (ranged GETs know their size)
};

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  ///< lowercase names
  std::string body;
};

struct HttpTimeouts {
  absl::Duration connect = absl::Seconds(5);
  absl::Duration request = absl::Minutes(5);  ///< whole request; slow transfers also stop below 1 KiB/s for 30 s
};

absl::StatusOr<HttpResponse> PerformHttp(const HttpRequest& request, const HttpTimeouts& timeouts);

}  // namespace lowbit

#endif  // LOWBIT_CORE_STORAGE_HTTP_TRANSPORT_H_
