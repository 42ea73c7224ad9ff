// lowbit_sigv4: signs requests read as JSON lines from stdin and prints each Authorization header, so a
// test can compare lowbit's signer with another implementation (botocore) on the same requests.
// Input per line: {"method", "host", "path", "query": [[k, v], ...], "headers": {k: v}, "payload_sha256",
//                  "access_key", "secret_key", "session_token", "region", "unix_time"}
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/storage/sigv4.h"

int main() {
  std::string line;
  while (std::getline(std::cin, line)) {
    const nlohmann::json j = nlohmann::json::parse(line);
    lowbit::SigV4Request r;
    r.method = j["method"];
    r.host = j["host"];
    r.path = j["path"];
    for (const auto& kv : j["query"]) r.query.emplace_back(kv[0], kv[1]);
    for (const auto& [k, v] : j["headers"].items()) r.headers[k] = v;
    r.payload_sha256 = j["payload_sha256"];
    const lowbit::AwsCredentials c{j["access_key"], j["secret_key"], j["session_token"]};
    const auto headers = lowbit::SignV4(r, c, j["region"].get<std::string>(), "s3", absl::FromUnixSeconds(j["unix_time"]));
    std::cout << headers.at("authorization") << "\n";
  }
  return 0;
}
