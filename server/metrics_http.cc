#include "server/metrics_http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstring>

#include <openssl/ssl.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"

namespace lowbit::server {

// The server's SSL_CTX, made again when the certificate or key file changes (checked at each connection).
struct MetricsHttpServer::Tls {
  explicit Tls(TlsFiles files) : files(std::move(files)) {}
  ~Tls() {
    if (ctx != nullptr) SSL_CTX_free(ctx);
  }
  static int64_t Mtime(const std::string& path) {
    struct stat st;
    return path.empty() || ::stat(path.c_str(), &st) != 0 ? -1 : st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
  }
  absl::Status Reload() {
    absl::MutexLock lock(&mu);
    const std::array<int64_t, 3> stamp = {Mtime(files.cert), Mtime(files.key), Mtime(files.client_ca)};
    if (ctx != nullptr && stamp == loaded) return absl::OkStatus();
    SSL_CTX* fresh = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(fresh, TLS1_2_VERSION);
    bool ok = SSL_CTX_use_certificate_chain_file(fresh, files.cert.c_str()) == 1 &&
              SSL_CTX_use_PrivateKey_file(fresh, files.key.c_str(), SSL_FILETYPE_PEM) == 1 &&
              SSL_CTX_check_private_key(fresh) == 1;
    if (ok && !files.client_ca.empty()) {
      ok = SSL_CTX_load_verify_locations(fresh, files.client_ca.c_str(), nullptr) == 1;
      SSL_CTX_set_verify(fresh, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
    if (!ok) {
      SSL_CTX_free(fresh);
      return absl::InvalidArgumentError(absl::StrCat("metrics TLS: cannot load ", files.cert, " and ", files.key));
    }
    if (ctx != nullptr) SSL_CTX_free(ctx);  // connections hold their own reference (SSL_new)
    ctx = fresh;
    loaded = stamp;
    return absl::OkStatus();
  }
  SSL* NewConnection(int fd) {
    absl::MutexLock lock(&mu);
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    return ssl;
  }
  const TlsFiles files;
  absl::Mutex mu;
  SSL_CTX* ctx ABSL_GUARDED_BY(mu) = nullptr;
  std::array<int64_t, 3> loaded ABSL_GUARDED_BY(mu) = {};
};

MetricsHttpServer::MetricsHttpServer(int fd, int port, std::shared_ptr<prometheus::Registry> registry,
                                     const Options& options)
    : fd_(fd), port_(port), registry_(std::move(registry)), options_(options) {}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const std::string& address,
                                                                            std::shared_ptr<prometheus::Registry> registry,
                                                                            const Options& options) {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port)) {
    return absl::InvalidArgumentError(absl::StrCat("metrics address must be host:port, got ", address));
  }
  std::string host = address.substr(0, colon);
  addrinfo hints = {};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.empty() ? nullptr : host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot resolve metrics address ", address));
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  const bool bound = ::bind(fd, found->ai_addr, found->ai_addrlen) == 0 && ::listen(fd, 16) == 0;
  freeaddrinfo(found);
  if (!bound) {
    const int err = errno;
    ::close(fd);
    return absl::UnavailableError(absl::StrCat("cannot listen on ", address, ": ", std::strerror(err)));
  }
  sockaddr_in actual = {};
  socklen_t len = sizeof actual;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&actual), &len);
  std::unique_ptr<MetricsHttpServer> server(new MetricsHttpServer(fd, ntohs(actual.sin_port), std::move(registry), options));
  if (options.tls.enabled()) {
    server->tls_ = std::make_unique<Tls>(options.tls);
    if (absl::Status loaded = server->tls_->Reload(); !loaded.ok()) return loaded;
  }
  server->thread_ = std::thread([s = server.get()] { s->Serve(); });
  return server;
}

MetricsHttpServer::~MetricsHttpServer() {
  stopping_ = true;
  if (thread_.joinable()) thread_.join();
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return connections_ == 0; };
  mu_.Await(absl::Condition(&idle));  // connection threads end by their deadline
  ::close(fd_);
}

void MetricsHttpServer::Serve() {
  while (!stopping_) {
    pollfd p = {fd_, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;  // wake up regularly to notice stopping_
    const int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    const absl::Duration d = options_.connection_deadline;
    timeval timeout = {static_cast<time_t>(absl::ToInt64Seconds(d)), static_cast<suseconds_t>(absl::ToInt64Microseconds(d) % 1000000)};
    ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    ::setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    {
      absl::MutexLock lock(&mu_);
      if (connections_ >= kMaxConnections) {  // full: refuse at once rather than queue behind slow clients
        ::close(client);
        continue;
      }
      ++connections_;
    }
    std::thread([this, client] {
      Answer(client);
      ::close(client);
      absl::MutexLock lock(&mu_);
      --connections_;
    }).detach();
  }
}

void MetricsHttpServer::Answer(int client) {
  const absl::Time deadline = absl::Now() + options_.connection_deadline;
  SSL* ssl = nullptr;
  if (tls_ != nullptr) {
    if (absl::Status s = tls_->Reload(); !s.ok()) std::fprintf(stderr, "lowbitd: %s\n", s.ToString().c_str());
    ssl = tls_->NewConnection(client);
    if (SSL_accept(ssl) != 1) {
      SSL_free(ssl);
      return;
    }
  }
  auto receive = [&](char* buf, int size) -> int {
    return ssl != nullptr ? SSL_read(ssl, buf, size) : static_cast<int>(::recv(client, buf, static_cast<size_t>(size), 0));
  };
  auto send_all = [&](const std::string& data) {
    for (size_t sent = 0; sent < data.size() && absl::Now() < deadline;) {
      const int n = ssl != nullptr ? SSL_write(ssl, data.data() + sent, static_cast<int>(data.size() - sent))
                                   : static_cast<int>(::send(client, data.data() + sent, data.size() - sent, MSG_NOSIGNAL));
      if (n <= 0) return;
      sent += static_cast<size_t>(n);
    }
  };
  std::string request;
  char buf[2048];
  // A client that trickles its request one byte at a time still ends at the deadline.
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < 16384 && absl::Now() < deadline) {
    const int n = receive(buf, sizeof buf);
    if (n <= 0) break;
    request.append(buf, static_cast<size_t>(n));
  }
  std::string status = "404 Not Found", type = "text/plain", body = "not found\n", extra;
  if (request.find("\r\n\r\n") == std::string::npos) {
    status = "400 Bad Request";
    body = "incomplete request\n";
  } else if (absl::StartsWith(request, "GET /metrics ") || absl::StartsWith(request, "GET /metrics?")) {
    std::string authorization;
    for (absl::string_view line : absl::StrSplit(request.substr(0, request.find("\r\n\r\n")), "\r\n")) {
      if (absl::StartsWithIgnoreCase(line, "authorization:")) authorization = std::string(line.substr(14));
    }
    const absl::Status allowed = options_.auth != nullptr ? options_.auth->CheckAuthorization(authorization) : absl::OkStatus();
    if (!allowed.ok()) {
      status = "401 Unauthorized";
      body = absl::StrCat(allowed.message(), "\n");
      extra = "WWW-Authenticate: Bearer\r\n";
    } else {
      status = "200 OK";
      type = "text/plain; version=0.0.4; charset=utf-8";
      body = prometheus::TextSerializer().Serialize(registry_->Collect());
    }
  }
  send_all(absl::StrCat("HTTP/1.1 ", status, "\r\nContent-Type: ", type, "\r\n", extra, "Content-Length: ", body.size(),
                        "\r\nConnection: close\r\n\r\n", body));
  if (ssl != nullptr) {
    SSL_shutdown(ssl);
    SSL_free(ssl);
  }
}

}  // namespace lowbit::server
