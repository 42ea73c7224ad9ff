#include "core/storage/web_identity.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "core/storage/aws_config.h"
#include "core/util/status_macros.h"

namespace lowbit {
namespace {

// application/x-www-form-urlencoded, as STS's query API takes its parameters.
std::string FormEncode(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

}  // namespace

std::optional<WebIdentityCredentials::Options> WebIdentityCredentials::FromEnvironment(
    const std::string& region, const std::function<const char*(const char*)>& getenv) {
  auto env = [&](const char* name) -> std::string {
    const char* v = getenv(name);
    return v != nullptr ? std::string(v) : std::string();
  };
  Options options;
  options.role_arn = env("AWS_ROLE_ARN");
  options.token_file = env("AWS_WEB_IDENTITY_TOKEN_FILE");
  if (options.role_arn.empty() || options.token_file.empty()) return std::nullopt;
  options.session_name = env("AWS_ROLE_SESSION_NAME");
  if (options.session_name.empty()) options.session_name = absl::StrCat("lowbit-", absl::ToUnixSeconds(absl::Now()));
  options.sts_endpoint = env("AWS_ENDPOINT_URL_STS");
  if (options.sts_endpoint.empty()) options.sts_endpoint = env("AWS_ENDPOINT_URL");
  if (options.sts_endpoint.empty()) options.sts_endpoint = absl::StrCat("https://sts.", region, ".amazonaws.com");
  return options;
}

absl::StatusOr<AwsCredentials> WebIdentityCredentials::Get() {
  absl::MutexLock lock(&mu_);
  if (!cached_.empty() && absl::Now() < expiration_ - absl::Minutes(5)) return cached_;
  absl::Time expiration;
  ASSIGN_OR_RETURN(cached_, Assume(&expiration));
  expiration_ = expiration;
  return cached_;
}

absl::StatusOr<AwsCredentials> WebIdentityCredentials::Assume(absl::Time* expiration) const {
  std::ifstream in(options_.token_file);
  std::stringstream token;
  token << in.rdbuf();
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read the web identity token AWS_WEB_IDENTITY_TOKEN_FILE=", options_.token_file));
  }
  const std::string body = absl::StrCat(
      "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=", FormEncode(options_.role_arn),
      "&RoleSessionName=", FormEncode(options_.session_name),
      "&WebIdentityToken=", FormEncode(absl::StripAsciiWhitespace(token.str())));
  HttpRequest request{"POST", absl::StrCat(absl::StripSuffix(options_.sts_endpoint, "/"), "/"),
                      {{"Content-Type", "application/x-www-form-urlencoded"}}, body};
  absl::StatusOr<HttpResponse> response = PerformHttp(request, options_.timeouts);
  if (!response.ok()) {
    return absl::UnavailableError(absl::StrCat("STS at ", options_.sts_endpoint, ": ", response.status().message()));
  }
  const std::string what = absl::StrCat("AssumeRoleWithWebIdentity for ", options_.role_arn);
  if (response->status >= 500) {
    return absl::UnavailableError(absl::StrCat(what, ": STS answered ", response->status));
  }
  if (response->status != 200) {
    return absl::PermissionDeniedError(absl::StrCat(what, " refused (HTTP ", response->status, "): ",
                                                    AwsXmlValue(response->body, "Code"), " ",
                                                    AwsXmlValue(response->body, "Message")));
  }
  AwsCredentials credentials{AwsXmlValue(response->body, "AccessKeyId"), AwsXmlValue(response->body, "SecretAccessKey"),
                             AwsXmlValue(response->body, "SessionToken")};
  std::string error;
  if (credentials.empty() ||
      !absl::ParseTime(absl::RFC3339_full, AwsXmlValue(response->body, "Expiration"), expiration, &error)) {
    return absl::DataLossError(absl::StrCat(what, ": STS's answer holds no credentials with an expiration"));
  }
  return credentials;
}

}  // namespace lowbit
