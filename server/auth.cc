#include "server/auth.h"

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <sstream>

#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <nlohmann/json.hpp>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/util/status_macros.h"

namespace lowbit::server {
namespace {

constexpr absl::Duration kClockSkew = absl::Seconds(30);  // leeway on exp and nbf between machines

absl::Status Unauthenticated(absl::string_view why) { return absl::UnauthenticatedError(why); }

int64_t ModificationTime(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string Sha256(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof digest);
}

std::string Base64UrlDecode(absl::string_view text) {
  std::string out;
  if (!absl::WebSafeBase64Unescape(text, &out)) return "";
  return out;
}

using PkeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

// An RSA (n, e) or P-256 (x, y) public key from its JWK members.
absl::StatusOr<PkeyPtr> KeyFromJwk(const nlohmann::json& jwk) {
  auto member = [&](const char* name) -> std::string {
    return jwk.contains(name) && jwk[name].is_string() ? Base64UrlDecode(jwk[name].get<std::string>()) : "";
  };
  const std::string kty = jwk.value("kty", "");
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> build(OSSL_PARAM_BLD_new(), OSSL_PARAM_BLD_free);
  std::unique_ptr<BIGNUM, decltype(&BN_free)> n(nullptr, BN_free), e(nullptr, BN_free);
  std::string point;
  const char* type = nullptr;
  if (kty == "RSA") {
    const std::string nb = member("n"), eb = member("e");
    if (nb.empty() || eb.empty()) return absl::InvalidArgumentError("RSA key without n or e");
    n.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(nb.data()), static_cast<int>(nb.size()), nullptr));
    e.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(eb.data()), static_cast<int>(eb.size()), nullptr));
    OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_N, n.get());
    OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_E, e.get());
    type = "RSA";
  } else if (kty == "EC") {
    const std::string x = member("x"), y = member("y");
    if (jwk.value("crv", "") != "P-256" || x.size() != 32 || y.size() != 32) {
      return absl::InvalidArgumentError("EC keys must be P-256 with 32-byte x and y");
    }
    point = absl::StrCat("\x04", x, y);  // uncompressed point
    OSSL_PARAM_BLD_push_utf8_string(build.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
    OSSL_PARAM_BLD_push_octet_string(build.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size());
    type = "EC";
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unsupported key type '", kty, "' (RSA or EC)"));
  }
  std::unique_ptr<OSSL_PARAM, decltype(&OSSL_PARAM_free)> params(OSSL_PARAM_BLD_to_param(build.get()), OSSL_PARAM_free);
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr),
                                                                   EVP_PKEY_CTX_free);
  EVP_PKEY* key = nullptr;
  if (params == nullptr || ctx == nullptr || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return absl::InvalidArgumentError("the key's parameters are not a valid public key");
  }
  return PkeyPtr(key, EVP_PKEY_free);
}

// ES256 signatures are r || s (RFC 7518 3.4); OpenSSL verifies DER.
std::string EcdsaDer(absl::string_view raw) {
  if (raw.size() != 64) return "";
  ECDSA_SIG* sig = ECDSA_SIG_new();
  ECDSA_SIG_set0(sig, BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), 32, nullptr),
                 BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()) + 32, 32, nullptr));
  unsigned char* der = nullptr;
  const int len = i2d_ECDSA_SIG(sig, &der);
  std::string out = len > 0 ? std::string(reinterpret_cast<char*>(der), static_cast<size_t>(len)) : "";
  OPENSSL_free(der);
  ECDSA_SIG_free(sig);
  return out;
}

bool VerifySha256(EVP_PKEY* key, absl::string_view data, absl::string_view signature) {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  return ctx != nullptr && EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key) == 1 &&
         EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(data.data()), data.size()) == 1;
}

}  // namespace

struct Authenticator::Keys {
  struct Key {
    std::string kty;  // "RSA" or "EC": the only algorithm each may verify (RS256, ES256)
    PkeyPtr pkey{nullptr, EVP_PKEY_free};
  };
  std::map<std::string, Key> by_kid;
};

Authenticator::Authenticator(const Options& options) : options_(options) {}
Authenticator::~Authenticator() = default;

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Create(const Options& options) {
  std::unique_ptr<Authenticator> auth(new Authenticator(options));
  RETURN_IF_ERROR(auth->Reload());
  return auth;
}

absl::Status Authenticator::Reload() const {
  absl::MutexLock lock(&mu_);
  if (absl::Now() - checked_ < absl::Seconds(1)) return absl::OkStatus();  // at most one stat per second
  checked_ = absl::Now();
  if (!options_.token_file.empty()) {
    const int64_t mtime = ModificationTime(options_.token_file);
    if (mtime != token_file_mtime_) {
      ASSIGN_OR_RETURN(const std::string text, ReadFile(options_.token_file));
      std::vector<std::string> hashes;
      for (absl::string_view line : absl::StrSplit(text, '\n')) {
        line = absl::StripAsciiWhitespace(line);
        if (line.empty() || line[0] == '#') continue;
        hashes.push_back(Sha256(line));
      }
      if (hashes.empty()) return absl::InvalidArgumentError(absl::StrCat("no token in ", options_.token_file));
      token_hashes_ = std::move(hashes);
      token_file_mtime_ = mtime;
    }
  }
  if (!options_.jwks_file.empty()) {
    const int64_t mtime = ModificationTime(options_.jwks_file);
    if (mtime != jwks_file_mtime_) {
      ASSIGN_OR_RETURN(const std::string text, ReadFile(options_.jwks_file));
      const nlohmann::json jwks = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
      if (!jwks.is_object() || !jwks.contains("keys") || !jwks["keys"].is_array()) {
        return absl::InvalidArgumentError(absl::StrCat(options_.jwks_file, " is not a JWKS ({\"keys\": [...]})"));
      }
      auto keys = std::make_unique<Keys>();
      for (const nlohmann::json& jwk : jwks["keys"]) {
        if (!jwk.is_object()) continue;
        absl::StatusOr<PkeyPtr> pkey = KeyFromJwk(jwk);
        if (!pkey.ok()) return absl::InvalidArgumentError(absl::StrCat(options_.jwks_file, ": ", pkey.status().message()));
        keys->by_kid[jwk.value("kid", "")] = Keys::Key{jwk.value("kty", ""), *std::move(pkey)};
      }
      if (keys->by_kid.empty()) return absl::InvalidArgumentError(absl::StrCat("no key in ", options_.jwks_file));
      keys_ = std::move(keys);
      jwks_file_mtime_ = mtime;
    }
  }
  return absl::OkStatus();
}

absl::Status Authenticator::CheckToken(absl::string_view credential) const {
  const std::string hash = Sha256(credential);
  bool match = false;
  for (const std::string& h : token_hashes_) match |= CRYPTO_memcmp(h.data(), hash.data(), hash.size()) == 0;
  return match ? absl::OkStatus() : Unauthenticated("the bearer token is not valid");
}

absl::Status Authenticator::CheckJwt(absl::string_view credential) const {
  const std::vector<absl::string_view> parts = absl::StrSplit(credential, '.');
  if (parts.size() != 3) return Unauthenticated("the bearer token is not a JWT");
  const nlohmann::json header = nlohmann::json::parse(Base64UrlDecode(parts[0]), nullptr, false);
  const nlohmann::json claims = nlohmann::json::parse(Base64UrlDecode(parts[1]), nullptr, false);
  if (!header.is_object() || !claims.is_object()) return Unauthenticated("the JWT's header or claims are not JSON");
  // The algorithm is the key's, never the token's choice alone: "none" and HMAC are never accepted.
  const std::string alg = header.value("alg", "");
  const std::string kty = alg == "RS256" ? "RSA" : alg == "ES256" ? "EC" : "";
  if (kty.empty()) return Unauthenticated(absl::StrCat("JWT algorithm '", alg.substr(0, 16), "' is not accepted (RS256, ES256)"));
  auto key = keys_->by_kid.find(header.value("kid", ""));
  if (key == keys_->by_kid.end() && keys_->by_kid.size() == 1 && !header.contains("kid")) key = keys_->by_kid.begin();
  if (key == keys_->by_kid.end() || key->second.kty != kty) return Unauthenticated("no JWKS key verifies this JWT");
  std::string signature = Base64UrlDecode(parts[2]);
  if (kty == "EC") signature = EcdsaDer(signature);
  const std::string signed_part = absl::StrCat(parts[0], ".", parts[1]);
  if (signature.empty() || !VerifySha256(key->second.pkey.get(), signed_part, signature)) {
    return Unauthenticated("the JWT's signature does not verify");
  }
  const absl::Time now = absl::Now();
  if (!claims.contains("exp") || !claims["exp"].is_number()) return Unauthenticated("the JWT has no exp");
  if (absl::FromUnixSeconds(claims["exp"].get<int64_t>()) + kClockSkew < now) return Unauthenticated("the JWT has expired");
  if (claims.contains("nbf") && claims["nbf"].is_number() &&
      absl::FromUnixSeconds(claims["nbf"].get<int64_t>()) - kClockSkew > now) {
    return Unauthenticated("the JWT is not valid yet");
  }
  if (!options_.issuer.empty() && claims.value("iss", "") != options_.issuer) return Unauthenticated("the JWT's issuer is not accepted");
  if (!options_.audience.empty()) {
    bool ok = claims.contains("aud") && claims["aud"].is_string() && claims["aud"].get<std::string>() == options_.audience;
    if (claims.contains("aud") && claims["aud"].is_array()) {
      for (const auto& a : claims["aud"]) ok |= a.is_string() && a.get<std::string>() == options_.audience;
    }
    if (!ok) return Unauthenticated("the JWT is not for this audience");
  }
  return absl::OkStatus();
}

absl::Status Authenticator::CheckAuthorization(absl::string_view header) const {
  if (!enabled()) return absl::OkStatus();
  if (absl::Status s = Reload(); !s.ok()) {
    std::fprintf(stderr, "lowbitd: keeping the previous credentials: %s\n", s.ToString().c_str());
  }
  absl::string_view credential = absl::StripAsciiWhitespace(header);
  if (!absl::ConsumePrefix(&credential, "Bearer ") && !absl::ConsumePrefix(&credential, "bearer ")) {
    return Unauthenticated("this server requires 'authorization: Bearer <token>'");
  }
  credential = absl::StripAsciiWhitespace(credential);
  absl::ReaderMutexLock lock(&mu_);
  absl::Status token = Unauthenticated("the bearer token is not valid");
  if (!token_hashes_.empty()) token = CheckToken(credential);
  if (token.ok() || keys_ == nullptr) return token;
  absl::Status jwt = CheckJwt(credential);
  return jwt.ok() || token_hashes_.empty() ? jwt : token;
}

absl::Status Authenticator::Check(const grpc::ServerContextBase& context) const {
  if (!enabled()) return absl::OkStatus();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return Unauthenticated("this server requires 'authorization: Bearer <token>'");
  return CheckAuthorization(absl::string_view(it->second.data(), it->second.size()));
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> GrpcServerCredentials(const TlsFiles& tls) {
  if (!tls.enabled()) return grpc::InsecureServerCredentials();
  if (tls.key.empty()) return absl::InvalidArgumentError("--tls_cert needs --tls_key");
  for (const std::string* path : {&tls.cert, &tls.key, &tls.client_ca}) {
    if (!path->empty() && ModificationTime(*path) < 0) return absl::InvalidArgumentError(absl::StrCat("cannot read ", *path));
  }
  // The provider re-reads the files every minute, so certificates rotate without a restart.
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(tls.key, tls.cert, tls.client_ca, 60);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!tls.client_ca.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::experimental::TlsServerCredentials(options);
  if (credentials == nullptr) return absl::InvalidArgumentError("the TLS files do not make server credentials");
  return credentials;
}

}  // namespace lowbit::server
