#include "core/storage/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace lowbit {
namespace {

std::string Hex(const unsigned char* data, size_t n) {
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(data), n));
}

std::string Hmac(absl::string_view key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string Digest(const EVP_MD* md, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md, nullptr);
  return std::string(reinterpret_cast<char*>(out), len);
}

}  // namespace

std::string Sha256Hex(absl::string_view data) {
  const std::string d = Digest(EVP_sha256(), data);
  return Hex(reinterpret_cast<const unsigned char*>(d.data()), d.size());
}

std::string ContentMd5(absl::string_view data) { return absl::Base64Escape(Digest(EVP_md5(), data)); }

std::string UriEncode(absl::string_view s, bool keep_slash) {
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%", absl::AsciiStrToUpper(absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(&c), 1))));
    }
  }
  return out;
}

std::string CanonicalQuery(const std::vector<std::pair<std::string, std::string>>& query) {
  std::vector<std::pair<std::string, std::string>> encoded;
  for (const auto& [k, v] : query) encoded.emplace_back(UriEncode(k, false), UriEncode(v, false));
  std::sort(encoded.begin(), encoded.end());
  std::vector<std::string> parts;
  for (const auto& [k, v] : encoded) parts.push_back(absl::StrCat(k, "=", v));
  return absl::StrJoin(parts, "&");
}

std::map<std::string, std::string> SignV4(const SigV4Request& request, const AwsCredentials& credentials,
                                          absl::string_view region, absl::string_view service, absl::Time now) {
  const std::string amz_date = absl::FormatTime("%Y%m%dT%H%M%SZ", now, absl::UTCTimeZone());
  const std::string date = amz_date.substr(0, 8);
  std::map<std::string, std::string> added = {{"x-amz-date", amz_date},
                                              {"x-amz-content-sha256", request.payload_sha256}};
  if (!credentials.session_token.empty()) added["x-amz-security-token"] = credentials.session_token;

  std::map<std::string, std::string> signed_headers = request.headers;  // sorted by lowercase name
  signed_headers["host"] = request.host;
  for (const auto& [k, v] : added) signed_headers[k] = v;
  std::string canonical_headers, names;
  for (const auto& [k, v] : signed_headers) {
    absl::StrAppend(&canonical_headers, k, ":", absl::StripAsciiWhitespace(v), "\n");
    absl::StrAppend(&names, names.empty() ? "" : ";", k);
  }
  const std::string canonical_request = absl::StrCat(request.method, "\n", request.path, "\n",
                                                     CanonicalQuery(request.query), "\n", canonical_headers, "\n",
                                                     names, "\n", request.payload_sha256);
  const std::string scope = absl::StrCat(date, "/", region, "/", service, "/aws4_request");
  const std::string string_to_sign =
      absl::StrCat("AWS4-HMAC-SHA256\n", amz_date, "\n", scope, "\n", Sha256Hex(canonical_request));
  const std::string key = Hmac(Hmac(Hmac(Hmac(absl::StrCat("AWS4", credentials.secret_access_key), date), region), service),
                               "aws4_request");
  const std::string signature = absl::BytesToHexString(Hmac(key, string_to_sign));
  added["authorization"] = absl::StrCat("AWS4-HMAC-SHA256 Credential=", credentials.access_key_id, "/", scope,
                                        ",SignedHeaders=", names, ",Signature=", signature);
  return added;
}

}  // namespace lowbit
