#include "core/storage/s3_object_store.h"

#include <deque>
#include <random>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/storage/aws_config.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

constexpr char kEmptySha256[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

// 501 Not Implemented is a server that lacks the call, not a failing one.
bool Retryable(long status) { return (status >= 500 && status != 501) || status == 429; }

// The status a non-2xx S3 response maps to, with S3's own error code in the message.
absl::Status ErrorFor(const HttpResponse& r, const std::string& what) {
  const std::string code = AwsXmlValue(r.body, "Code");
  const std::string message = AwsXmlValue(r.body, "Message");
  const std::string detail = absl::StrCat(what, ": HTTP ", r.status, code.empty() ? "" : absl::StrCat(" ", code),
                                          message.empty() ? "" : absl::StrCat(" (", message, ")"));
  switch (r.status) {
    case 400: return absl::InvalidArgumentError(detail);
    case 401:
    case 403: return absl::PermissionDeniedError(absl::StrCat(detail, "; check the AWS credentials and permissions"));
    case 404: return absl::NotFoundError(detail);
    case 409:
    case 412: return absl::FailedPreconditionError(detail);
    case 416: return absl::OutOfRangeError(detail);
    case 429:
    case 500:
    case 502:
    case 503:
    case 504: return absl::UnavailableError(detail);
    default: return absl::UnknownError(detail);
  }
}

// Uploads parts on its own thread, so the job's thread goes on reading the next tensors meanwhile. At
// most kQueuedParts parts wait (memory: that many parts plus the one being filled).
class S3ObjectWriter final : public ObjectWriter {
 public:
  S3ObjectWriter(S3ObjectStore* store, std::string uri, std::string bucket, std::string key)
      : store_(store), uri_(std::move(uri)), bucket_(std::move(bucket)), key_(std::move(key)) {}
  ~S3ObjectWriter() override { Abort(); }

  absl::Status Append(absl::string_view data) override {
    if (closed_) return absl::FailedPreconditionError("writer is closed");
    buffer_.append(data.data(), data.size());
    written_ += data.size();
    const uint64_t part = store_->options().part_size;
    size_t sent = 0;
    // Hand whole parts to the uploader as soon as they are complete; keep the tail.
    while (buffer_.size() - sent >= part) {
      RETURN_IF_ERROR(Enqueue(buffer_.substr(sent, part)));
      sent += part;
    }
    if (sent > 0) buffer_.erase(0, sent);
    return absl::OkStatus();
  }

  absl::Status Commit() override {
    if (closed_) return absl::FailedPreconditionError("writer is closed");
    if (!uploader_.joinable()) {
      // Small object: one PUT.
      closed_ = true;
      ASSIGN_OR_RETURN(HttpResponse r, store_->Send({"put", "PUT", bucket_, key_, {}, {{"content-md5", ContentMd5(buffer_)}},
                                                     buffer_, uri_}));
      buffer_.clear();
      return absl::OkStatus();
    }
    if (!buffer_.empty()) RETURN_IF_ERROR(Enqueue(std::move(buffer_)));
    buffer_.clear();
    RETURN_IF_ERROR(StopUploader(/*discard=*/false));
    std::string xml = "<CompleteMultipartUpload>";
    {
      absl::MutexLock lock(&mu_);
      for (size_t i = 0; i < etags_.size(); ++i) {
        absl::StrAppend(&xml, "<Part><PartNumber>", i + 1, "</PartNumber><ETag>", etags_[i], "</ETag></Part>");
      }
    }
    absl::StrAppend(&xml, "</CompleteMultipartUpload>");
    absl::StatusOr<HttpResponse> r = store_->Send({"complete_multipart", "POST", bucket_, key_, {{"uploadId", upload_id_}},
                                                   {{"content-type", "application/xml"}}, xml, uri_});
    if (absl::IsNotFound(r.status()) && store_->Stat(uri_).ok()) {
      r = HttpResponse{200, {}, ""};  // a retried Complete whose first attempt succeeded
    }
    if (!r.ok()) return r.status();
    // S3 can answer 200 and still fail the completion in the body.
    if (absl::StrContains(r->body, "<Error>")) {
      return absl::UnavailableError(absl::StrCat("completing the upload of ", uri_, " failed: ", AwsXmlValue(r->body, "Code"),
                                                 " ", AwsXmlValue(r->body, "Message")));
    }
    closed_ = true;
    upload_id_.clear();
    return absl::OkStatus();
  }

  void Abort() override {
    if (closed_) return;
    closed_ = true;
    buffer_.clear();
    StopUploader(/*discard=*/true).IgnoreError();
    if (!upload_id_.empty()) {
      store_->Send({"abort_multipart", "DELETE", bucket_, key_, {{"uploadId", upload_id_}}, {}, {}, uri_}).IgnoreError();
    }
  }

  uint64_t bytes_written() const override { return written_; }

 private:
  static constexpr size_t kQueuedParts = 2;

  // Starts the multipart upload (first call) and queues one part, waiting while the queue is full.
  absl::Status Enqueue(std::string part) {
    if (!uploader_.joinable()) {
      ASSIGN_OR_RETURN(HttpResponse r, store_->Send({"create_multipart", "POST", bucket_, key_, {{"uploads", ""}}, {}, {}, uri_}));
      upload_id_ = AwsXmlValue(r.body, "UploadId");
      if (upload_id_.empty()) return absl::UnavailableError(absl::StrCat("no UploadId in the answer for ", uri_));
      uploader_ = std::thread([this] { UploadLoop(); });
    }
    absl::MutexLock lock(&mu_);
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return queue_.size() + sending_ < kQueuedParts || !error_.ok();
    };
    mu_.Await(absl::Condition(&room));
    if (!error_.ok()) return error_;
    queue_.push_back(std::move(part));
    return absl::OkStatus();
  }

  // Lets queued parts finish (or drops them: `discard`) and joins the uploader.
  absl::Status StopUploader(bool discard) {
    if (!uploader_.joinable()) return absl::OkStatus();
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      if (discard) queue_.clear();
    }
    uploader_.join();
    absl::MutexLock lock(&mu_);
    return error_;
  }

  void UploadLoop() {
    while (true) {
      std::string part;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_ || !queue_.empty(); };
        mu_.Await(absl::Condition(&ready));
        if (queue_.empty()) return;  // done, and everything is sent
        part = std::move(queue_.front());
        queue_.pop_front();
        ++sending_;
      }
      int number;
      {
        absl::MutexLock lock(&mu_);
        number = static_cast<int>(etags_.size()) + 1;
      }
      absl::StatusOr<HttpResponse> r = store_->Send({"upload_part", "PUT", bucket_, key_,
                                                     {{"partNumber", absl::StrCat(number)}, {"uploadId", upload_id_}},
                                                     {{"content-md5", ContentMd5(part)}}, part, uri_});
      absl::Status failed = r.status();
      std::string etag;
      if (r.ok()) {
        auto it = r->headers.find("etag");
        if (it == r->headers.end()) failed = absl::UnavailableError(absl::StrCat("no ETag for part ", number, " of ", uri_));
        else etag = it->second;
      }
      absl::MutexLock lock(&mu_);
      --sending_;
      if (!failed.ok()) {
        error_ = failed;
        queue_.clear();  // the upload is lost; Commit or Abort reports and cleans up
        return;
      }
      etags_.push_back(etag);
    }
  }

  S3ObjectStore* const store_;
  const std::string uri_, bucket_, key_;
  std::string buffer_;  ///< the part being filled (job thread only)
  std::string upload_id_;
  uint64_t written_ = 0;
  bool closed_ = false;
  std::thread uploader_;
  absl::Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);  ///< parts waiting to be sent
  int sending_ ABSL_GUARDED_BY(mu_) = 0;                ///< parts being sent (0 or 1)
  std::vector<std::string> etags_ ABSL_GUARDED_BY(mu_);  ///< in part order; read by Commit after the join
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

absl::Status ValidateBucketName(absl::string_view bucket) {
  // The general-purpose bucket naming rules:
  // https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
  // Checked before any request, because the name becomes part of the host name in virtual-hosted style.
  auto refuse = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("invalid S3 bucket name '", bucket.substr(0, 80), "': ", why));
  };
  if (bucket.size() < 3 || bucket.size() > 63) return refuse("must be 3 to 63 characters long");
  for (char c : bucket) {
    if (!absl::ascii_islower(c) && !absl::ascii_isdigit(c) && c != '.' && c != '-') {
      return refuse("only lowercase letters, digits, '.' and '-' are allowed");
    }
  }
  auto alnum = [](char c) { return absl::ascii_islower(c) || absl::ascii_isdigit(c); };
  if (!alnum(bucket.front()) || !alnum(bucket.back())) return refuse("must begin and end with a letter or digit");
  if (absl::StrContains(bucket, "..")) return refuse("must not contain two adjacent periods");
  int dots = 0;
  bool digits_and_dots = true;
  for (char c : bucket) {
    dots += c == '.';
    digits_and_dots = digits_and_dots && (absl::ascii_isdigit(c) || c == '.');
  }
  if (digits_and_dots && dots == 3) return refuse("must not be formatted as an IP address");
  for (absl::string_view prefix : {"xn--", "sthree-", "amzn-s3-demo-"}) {
    if (absl::StartsWith(bucket, prefix)) return refuse(absl::StrCat("must not start with ", prefix));
  }
  for (absl::string_view suffix : {"-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"}) {
    if (absl::EndsWith(bucket, suffix)) return refuse(absl::StrCat("must not end with ", suffix));
  }
  return absl::OkStatus();
}

absl::Status ParseS3Uri(absl::string_view uri, std::string* bucket, std::string* key) {
  absl::string_view rest = uri;
  if (!absl::ConsumePrefix(&rest, "s3://")) return absl::InvalidArgumentError(absl::StrCat("not an s3:// URI: ", uri.substr(0, 200)));
  const size_t slash = rest.find('/');
  *bucket = std::string(rest.substr(0, slash));
  *key = slash == absl::string_view::npos ? "" : std::string(rest.substr(slash + 1));
  if (bucket->empty()) return absl::InvalidArgumentError(absl::StrCat("no bucket in ", uri.substr(0, 200)));
  RETURN_IF_ERROR(ValidateBucketName(*bucket));
  if (key->size() > 1024) {  // S3's limit on a key's UTF-8 length
    return absl::InvalidArgumentError(absl::StrCat("S3 object keys are at most 1024 bytes; this one is ", key->size()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<S3ObjectStore>> S3ObjectStore::Create(const Options& options) {
  if (options.credentials.empty() && !options.credential_source) {
    return absl::FailedPreconditionError(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_ROLE_ARN and "
        "AWS_WEB_IDENTITY_TOKEN_FILE, or a profile in ~/.aws/credentials");
  }
  if (options.part_size < (5u << 20)) return absl::InvalidArgumentError("part_size must be at least 5 MiB");
  if (!options.endpoint.empty() && !absl::StartsWith(options.endpoint, "http://") &&
      !absl::StartsWith(options.endpoint, "https://")) {
    return absl::InvalidArgumentError(absl::StrCat("S3 endpoint must start with http:// or https://: ", options.endpoint));
  }
  return std::unique_ptr<S3ObjectStore>(new S3ObjectStore(options));
}

absl::StatusOr<HttpResponse> S3ObjectStore::Send(const Call& call) {
  // Where the request goes.
  std::string scheme = "https", host = absl::StrCat("s3.", options_.region, ".amazonaws.com");
  if (!options_.endpoint.empty()) {
    absl::string_view e = options_.endpoint;
    scheme = absl::ConsumePrefix(&e, "https://") ? "https" : (absl::ConsumePrefix(&e, "http://"), "http");
    host = std::string(absl::StripSuffix(e, "/"));
  }
  const bool path_style = options_.addressing == Addressing::kPath ||
                          (options_.addressing == Addressing::kAuto && !options_.endpoint.empty());
  std::string path = absl::StrCat("/", UriEncode(call.key, /*keep_slash=*/true));
  if (path_style) {
    path = absl::StrCat("/", call.bucket, call.key.empty() ? "" : path);
  } else {
    host = absl::StrCat(call.bucket, ".", host);
  }
  const std::string query = CanonicalQuery(call.query);
  const std::string url = absl::StrCat(scheme, "://", host, path, query.empty() ? "" : "?", query);

  const std::string payload_hash = call.body.empty() ? kEmptySha256 : "UNSIGNED-PAYLOAD";
  thread_local std::mt19937_64 rng{std::random_device{}()};
  absl::Duration backoff = options_.initial_backoff;
  absl::Status last;
  for (int attempt = 1; attempt <= options_.max_attempts; ++attempt) {
    if (attempt > 1) {
      if (options_.observer) options_.observer->OnRetry(call.op);
      // Full jitter: a uniform wait up to the current backoff, so retrying clients spread out.
      std::uniform_int_distribution<int64_t> jitter(0, absl::ToInt64Microseconds(backoff));
      absl::SleepFor(absl::Microseconds(jitter(rng)));
      backoff = std::min(backoff * 2, options_.max_backoff);
    }
    HttpRequest request{call.method, url, call.headers, call.body, call.expected_response_bytes};
    SigV4Request to_sign{call.method, host, path, call.query, {}, payload_hash};
    for (const auto& [k, v] : call.headers) to_sign.headers[k] = v;
    AwsCredentials credentials = options_.credentials;
    if (options_.credential_source) {
      absl::StatusOr<AwsCredentials> fresh = options_.credential_source();
      if (!fresh.ok()) {
        last = absl::Status(fresh.status().code(), absl::StrCat(call.uri, ": ", fresh.status().message()));
        if (absl::IsUnavailable(last)) continue;  // STS unreachable for now: retried like S3 itself
        return last;
      }
      credentials = *std::move(fresh);
    }
    for (auto& [k, v] : SignV4(to_sign, credentials, options_.region, "s3", absl::Now())) request.headers[k] = v;
    absl::StatusOr<HttpResponse> response = PerformHttp(request, options_.timeouts);
    if (options_.observer) options_.observer->OnRequest(call.op, response.ok() ? static_cast<int>(response->status) : 0);
    if (!response.ok()) {
      last = absl::Status(response.status().code(), absl::StrCat(call.uri, ": ", response.status().message()));
      continue;  // connect failures, resets and timeouts are worth another try
    }
    if (response->status >= 200 && response->status < 300) return response;
    last = ErrorFor(*response, absl::StrCat(call.method, " ", call.uri));
    if (!Retryable(response->status)) return last;
  }
  return absl::Status(last.code(), absl::StrCat(last.message(), " (gave up after ", options_.max_attempts, " attempts)"));
}

absl::StatusOr<ObjectInfo> S3ObjectStore::Stat(absl::string_view uri) {
  std::string bucket, key;
  RETURN_IF_ERROR(ParseS3Uri(uri, &bucket, &key));
  ASSIGN_OR_RETURN(HttpResponse r, Send({"head", "HEAD", bucket, key, {}, {}, {}, std::string(uri)}));
  uint64_t size = 0;
  auto it = r.headers.find("content-length");
  if (it == r.headers.end() || !absl::SimpleAtoi(it->second, &size)) {
    return absl::UnavailableError(absl::StrCat("no Content-Length for ", uri));
  }
  return ObjectInfo{std::string(uri), size};
}

absl::StatusOr<std::string> S3ObjectStore::ReadRange(absl::string_view uri, uint64_t offset, uint64_t length) {
  if (length == 0) return std::string();
  std::string bucket, key;
  RETURN_IF_ERROR(ParseS3Uri(uri, &bucket, &key));
  absl::StatusOr<HttpResponse> r = Send({"get", "GET", bucket, key, {},
                                         {{"range", absl::StrCat("bytes=", offset, "-", offset + length - 1)}}, {},
                                         std::string(uri), length});
  if (!r.ok()) return r.status();
  if (r->body.size() != length) {
    return absl::OutOfRangeError(absl::StrCat("range [", offset, ", ", offset + length, ") of ", uri, " returned ",
                                              r->body.size(), " bytes"));
  }
  return std::move(r->body);
}

absl::StatusOr<std::vector<ObjectInfo>> S3ObjectStore::List(absl::string_view prefix) {
  std::string bucket, key_prefix;
  RETURN_IF_ERROR(ParseS3Uri(prefix, &bucket, &key_prefix));
  std::vector<ObjectInfo> out;
  std::string token;
  do {
    std::vector<std::pair<std::string, std::string>> query = {{"list-type", "2"}, {"prefix", key_prefix}};
    if (!token.empty()) query.emplace_back("continuation-token", token);
    ASSIGN_OR_RETURN(HttpResponse r, Send({"list", "GET", bucket, "", query, {}, {}, std::string(prefix)}));
    size_t pos = 0;
    while (true) {
      const size_t start = r.body.find("<Contents>", pos);
      if (start == std::string::npos) break;
      const size_t end = r.body.find("</Contents>", start);
      const absl::string_view entry = absl::string_view(r.body).substr(start, end - start);
      uint64_t size = 0;
      (void)absl::SimpleAtoi(AwsXmlValue(entry, "Size"), &size);
      out.push_back({absl::StrCat("s3://", bucket, "/", AwsXmlValue(entry, "Key")), size});
      pos = end;
    }
    token = AwsXmlValue(r.body, "IsTruncated") == "true" ? AwsXmlValue(r.body, "NextContinuationToken") : "";
  } while (!token.empty());
  std::sort(out.begin(), out.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.uri < b.uri; });
  return out;
}

absl::StatusOr<std::unique_ptr<ObjectWriter>> S3ObjectStore::NewWriter(absl::string_view uri) {
  std::string bucket, key;
  RETURN_IF_ERROR(ParseS3Uri(uri, &bucket, &key));
  if (key.empty()) return absl::InvalidArgumentError(absl::StrCat("no object key in ", uri));
  return std::unique_ptr<ObjectWriter>(new S3ObjectWriter(this, std::string(uri), bucket, key));
}

absl::Status S3ObjectStore::Delete(absl::string_view uri) {
  std::string bucket, key;
  RETURN_IF_ERROR(ParseS3Uri(uri, &bucket, &key));
  absl::StatusOr<HttpResponse> r = Send({"delete", "DELETE", bucket, key, {}, {}, {}, std::string(uri)});
  if (!r.ok() && !absl::IsNotFound(r.status())) return r.status();
  return absl::OkStatus();
}

absl::Status S3ObjectStore::CreateExclusive(absl::string_view uri, absl::string_view data) {
  std::string bucket, key;
  RETURN_IF_ERROR(ParseS3Uri(uri, &bucket, &key));
  // Conditional writes: https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
  absl::StatusOr<HttpResponse> r = Send({"put", "PUT", bucket, key, {},
                                         {{"if-none-match", "*"}, {"content-md5", ContentMd5(data)}}, data,
                                         std::string(uri)});
  if (absl::IsFailedPrecondition(r.status())) return absl::AlreadyExistsError(absl::StrCat(uri, " already exists"));
  return r.status();
}

absl::Status S3ObjectStore::Rename(absl::string_view from, absl::string_view to) {
  std::string bucket, key, to_bucket, to_key;
  RETURN_IF_ERROR(ParseS3Uri(from, &bucket, &key));
  RETURN_IF_ERROR(ParseS3Uri(to, &to_bucket, &to_key));
  ASSIGN_OR_RETURN(const ObjectInfo info, Stat(from));
  const std::string source = absl::StrCat("/", bucket, "/", UriEncode(key, /*keep_slash=*/true));
  // A server-side copy, then the delete. CopyObject takes objects up to 5 GiB; larger ones are copied
  // as a multipart upload of UploadPartCopy ranges.
  constexpr uint64_t kMaxCopy = 5ull << 30, kCopyPart = 1ull << 30;
  auto failed_in_body = [&](const HttpResponse& r) -> absl::Status {  // S3 may answer 200 and fail in the body
    if (!absl::StrContains(r.body, "<Error>")) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat("copying ", from, " failed: ", AwsXmlValue(r.body, "Code")));
  };
  if (info.size <= kMaxCopy) {
    ASSIGN_OR_RETURN(HttpResponse r, Send({"copy", "PUT", to_bucket, to_key, {}, {{"x-amz-copy-source", source}}, {},
                                           std::string(to)}));
    RETURN_IF_ERROR(failed_in_body(r));
  } else {
    ASSIGN_OR_RETURN(HttpResponse started, Send({"create_multipart", "POST", to_bucket, to_key, {{"uploads", ""}}, {}, {},
                                                 std::string(to)}));
    const std::string upload_id = AwsXmlValue(started.body, "UploadId");
    if (upload_id.empty()) return absl::UnavailableError(absl::StrCat("no UploadId in the answer for ", to));
    std::string xml = "<CompleteMultipartUpload>";
    absl::Status copied = absl::OkStatus();
    for (uint64_t offset = 0, part = 1; offset < info.size && copied.ok(); offset += kCopyPart, ++part) {
      const uint64_t last = std::min(info.size, offset + kCopyPart) - 1;
      absl::StatusOr<HttpResponse> r =
          Send({"upload_part_copy", "PUT", to_bucket, to_key, {{"partNumber", absl::StrCat(part)}, {"uploadId", upload_id}},
                {{"x-amz-copy-source", source}, {"x-amz-copy-source-range", absl::StrCat("bytes=", offset, "-", last)}},
                {}, std::string(to)});
      copied = r.ok() ? failed_in_body(*r) : r.status();
      if (copied.ok()) absl::StrAppend(&xml, "<Part><PartNumber>", part, "</PartNumber><ETag>", AwsXmlValue(r->body, "ETag"), "</ETag></Part>");
    }
    absl::StrAppend(&xml, "</CompleteMultipartUpload>");
    if (copied.ok()) {
      absl::StatusOr<HttpResponse> r = Send({"complete_multipart", "POST", to_bucket, to_key, {{"uploadId", upload_id}},
                                             {{"content-type", "application/xml"}}, xml, std::string(to)});
      copied = r.ok() ? failed_in_body(*r) : r.status();
    }
    if (!copied.ok()) {
      Send({"abort_multipart", "DELETE", to_bucket, to_key, {{"uploadId", upload_id}}, {}, {}, std::string(to)}).IgnoreError();
      return copied;
    }
  }
  return Delete(from);
}

absl::StatusOr<int> S3ObjectStore::DiscardIncomplete(absl::string_view prefix) {
  std::string bucket, key_prefix;
  RETURN_IF_ERROR(ParseS3Uri(prefix, &bucket, &key_prefix));
  absl::StatusOr<HttpResponse> r =
      Send({"list_multipart", "GET", bucket, "", {{"uploads", ""}, {"prefix", key_prefix}}, {}, {}, std::string(prefix)});
  if (!r.ok()) {
    // A server without ListMultipartUploads (s3rver answers 501) has no uploads to leak.
    if (r.status().message().find("NotImplemented") != absl::string_view::npos) return 0;
    return r.status();
  }
  int aborted = 0;
  for (size_t pos = r->body.find("<Upload>"); pos != std::string::npos; pos = r->body.find("<Upload>", pos + 1)) {
    const absl::string_view upload = absl::string_view(r->body).substr(pos, r->body.find("</Upload>", pos) - pos);
    const std::string key = AwsXmlValue(upload, "Key"), upload_id = AwsXmlValue(upload, "UploadId");
    if (key.empty() || upload_id.empty()) continue;
    RETURN_IF_ERROR(Send({"abort_multipart", "DELETE", bucket, key, {{"uploadId", upload_id}}, {}, {},
                          absl::StrCat("s3://", bucket, "/", key)}).status());
    ++aborted;
  }
  return aborted;
}

}  // namespace lowbit
