// Where S3 settings come from, as the AWS CLI and SDKs do it: environment variables first
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION / AWS_DEFAULT_REGION,
// AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_PROFILE), then the shared files (~/.aws/credentials and
// ~/.aws/config, or AWS_SHARED_CREDENTIALS_FILE / AWS_CONFIG_FILE) for the selected profile.
#ifndef LOWBIT_CORE_STORAGE_AWS_CONFIG_H_
#define LOWBIT_CORE_STORAGE_AWS_CONFIG_H_

#include <functional>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "core/storage/sigv4.h"

namespace lowbit {

struct AwsConfig {
  AwsCredentials credentials;   ///< empty when none was found
  std::string region;           ///< "" when none was found
  std::string endpoint_url;     ///< "" for AWS itself
  std::string profile;          ///< the profile the files were read for
};

// `getenv` is injectable for tests. A profile named explicitly (AWS_PROFILE) but absent from both files
// is NOT_FOUND; a malformed file is INVALID_ARGUMENT naming the file (never its contents).
absl::StatusOr<AwsConfig> LoadAwsConfig(const std::function<const char*(const char*)>& getenv = ::getenv);

// The text of the first <tag>...</tag> at or after *pos in an AWS XML response (S3's, STS's), unescaped;
// "" if absent. Their XML is simple and flat where lowbit reads it. With `pos`, *pos moves past it.
std::string AwsXmlValue(absl::string_view xml, absl::string_view tag, size_t* pos = nullptr);

// Sections of an INI file ("[default]", "[profile x]" -> "x" when `strip_profile_prefix`).
std::map<std::string, std::map<std::string, std::string>> ParseIni(const std::string& text, bool strip_profile_prefix);

}  // namespace lowbit

#endif  // LOWBIT_CORE_STORAGE_AWS_CONFIG_H_
