#include "core/storage/aws_config.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace lowbit {
namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream s;
  s << in.rdbuf();
  *out = s.str();
  return true;
}

}  // namespace

std::map<std::string, std::map<std::string, std::string>> ParseIni(const std::string& text, bool strip_profile_prefix) {
  std::map<std::string, std::map<std::string, std::string>> sections;
  std::string current;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      std::string name(absl::StripAsciiWhitespace(line.substr(1, line.size() - 2)));
      if (strip_profile_prefix && absl::StartsWith(name, "profile ")) name = std::string(absl::StripAsciiWhitespace(name.substr(8)));
      current = name;
      sections[current];
      continue;
    }
    const size_t eq = line.find('=');
    if (eq == absl::string_view::npos || current.empty()) continue;
    sections[current][std::string(absl::StripAsciiWhitespace(line.substr(0, eq)))] =
        std::string(absl::StripAsciiWhitespace(line.substr(eq + 1)));
  }
  return sections;
}

std::string AwsXmlValue(absl::string_view xml, absl::string_view tag, size_t* pos) {
  const std::string open = absl::StrCat("<", tag, ">"), close = absl::StrCat("</", tag, ">");
  size_t start = xml.find(open, pos ? *pos : 0);
  if (start == absl::string_view::npos) return "";
  start += open.size();
  const size_t end = xml.find(close, start);
  if (end == absl::string_view::npos) return "";
  if (pos) *pos = end + close.size();
  return absl::StrReplaceAll(xml.substr(start, end - start),
                             {{"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&apos;", "'"}, {"&amp;", "&"}});
}

absl::StatusOr<AwsConfig> LoadAwsConfig(const std::function<const char*(const char*)>& getenv) {
  auto env = [&](const char* name) -> std::string {
    const char* v = getenv(name);
    return v != nullptr ? std::string(v) : std::string();
  };
  AwsConfig config;
  const std::string explicit_profile = env("AWS_PROFILE");
  config.profile = explicit_profile.empty() ? "default" : explicit_profile;
  const std::string home = env("HOME");
  std::string credentials_path = env("AWS_SHARED_CREDENTIALS_FILE");
  if (credentials_path.empty() && !home.empty()) credentials_path = home + "/.aws/credentials";
  std::string config_path = env("AWS_CONFIG_FILE");
  if (config_path.empty() && !home.empty()) config_path = home + "/.aws/config";

  std::map<std::string, std::string> from_files;  // credentials file wins over config file
  bool profile_found = false;
  std::string text;
  if (!config_path.empty() && ReadFile(config_path, &text)) {
    auto sections = ParseIni(text, /*strip_profile_prefix=*/true);
    if (auto it = sections.find(config.profile); it != sections.end()) {
      profile_found = true;
      from_files = it->second;
    }
  }
  if (!credentials_path.empty() && ReadFile(credentials_path, &text)) {
    auto sections = ParseIni(text, /*strip_profile_prefix=*/false);
    if (auto it = sections.find(config.profile); it != sections.end()) {
      profile_found = true;
      for (const auto& [k, v] : it->second) from_files[k] = v;
    }
  }
  if (!explicit_profile.empty() && !profile_found) {
    return absl::NotFoundError(absl::StrCat("AWS profile '", explicit_profile, "' is in neither ", credentials_path,
                                            " nor ", config_path));
  }
  auto pick = [&](const char* env_name, const char* file_key) {
    std::string v = env(env_name);
    if (v.empty()) {
      auto it = from_files.find(file_key);
      if (it != from_files.end()) v = it->second;
    }
    return v;
  };
  // Keys and secret come as a pair from one source, never half from the environment.
  if (!env("AWS_ACCESS_KEY_ID").empty()) {
    config.credentials = {env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"), env("AWS_SESSION_TOKEN")};
  } else {
    config.credentials = {from_files["aws_access_key_id"], from_files["aws_secret_access_key"],
                          from_files["aws_session_token"]};
  }
  config.region = pick("AWS_REGION", "region");
  if (config.region.empty()) config.region = env("AWS_DEFAULT_REGION");
  config.endpoint_url = env("AWS_ENDPOINT_URL_S3");
  if (config.endpoint_url.empty()) config.endpoint_url = pick("AWS_ENDPOINT_URL", "endpoint_url");
  return config;
}

}  // namespace lowbit
