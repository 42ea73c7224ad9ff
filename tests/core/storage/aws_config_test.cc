// Credential and region resolution: environment first, then the shared files' profile.
#include "core/storage/aws_config.h"

#include <fstream>
#include <map>

#include "gtest/gtest.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit {
namespace {

class FakeEnv {
 public:
  explicit FakeEnv(std::map<std::string, std::string> vars) : vars_(std::move(vars)) {}
  std::function<const char*(const char*)> fn() {
    return [this](const char* name) -> const char* {
      auto it = vars_.find(name);
      return it == vars_.end() ? nullptr : it->second.c_str();
    };
  }

 private:
  std::map<std::string, std::string> vars_;
};

TEST(AwsConfigTest, EnvironmentWins) {
  FakeEnv env({{"AWS_ACCESS_KEY_ID", "AKENV"}, {"AWS_SECRET_ACCESS_KEY", "secret-env"}, {"AWS_SESSION_TOKEN", "tok"},
               {"AWS_REGION", "eu-west-1"}, {"AWS_ENDPOINT_URL", "http://127.0.0.1:9000"}, {"HOME", "/nonexistent"}});
  auto c = LoadAwsConfig(env.fn());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->credentials.access_key_id, "AKENV");
  EXPECT_EQ(c->credentials.session_token, "tok");
  EXPECT_EQ(c->region, "eu-west-1");
  EXPECT_EQ(c->endpoint_url, "http://127.0.0.1:9000");
}

TEST(AwsConfigTest, ProfilesFromSharedFiles) {
  testing::TempDir dir;
  std::ofstream(dir.File("credentials")) << "[default]\naws_access_key_id = AKDEF\naws_secret_access_key = s1\n\n"
                                            "[work]\naws_access_key_id=AKWORK\naws_secret_access_key=s2\naws_session_token=t2\n";
  std::ofstream(dir.File("config")) << "[default]\nregion = us-west-2\n[profile work]\nregion = ap-south-1\n"
                                       "endpoint_url = http://minio:9000\n";
  FakeEnv def({{"AWS_SHARED_CREDENTIALS_FILE", dir.File("credentials")}, {"AWS_CONFIG_FILE", dir.File("config")}});
  auto c = LoadAwsConfig(def.fn());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->credentials.access_key_id, "AKDEF");
  EXPECT_EQ(c->region, "us-west-2");
  FakeEnv work({{"AWS_SHARED_CREDENTIALS_FILE", dir.File("credentials")}, {"AWS_CONFIG_FILE", dir.File("config")},
                {"AWS_PROFILE", "work"}});
  c = LoadAwsConfig(work.fn());
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->credentials.access_key_id, "AKWORK");
  EXPECT_EQ(c->credentials.session_token, "t2");
  EXPECT_EQ(c->region, "ap-south-1");
  EXPECT_EQ(c->endpoint_url, "http://minio:9000");
  FakeEnv missing({{"AWS_SHARED_CREDENTIALS_FILE", dir.File("credentials")}, {"AWS_PROFILE", "nope"}});
  EXPECT_EQ(LoadAwsConfig(missing.fn()).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace lowbit
