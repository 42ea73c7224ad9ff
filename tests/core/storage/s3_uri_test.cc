// s3:// URIs: the bucket name is checked against AWS's naming rules before it becomes part of a signed
// request's host name (virtual-hosted style), and keys are bounded as S3 bounds them.
#include "core/storage/s3_object_store.h"

#include "gtest/gtest.h"

namespace lowbit {
namespace {

TEST(S3UriTest, BucketNamesFollowTheAwsRules) {
  std::string bucket, key;
  ASSERT_TRUE(ParseS3Uri("s3://my-models.v2/llama/7b/model.safetensors", &bucket, &key).ok());
  EXPECT_EQ(bucket, "my-models.v2");
  EXPECT_EQ(key, "llama/7b/model.safetensors");
  // Each of these would otherwise be spliced into "<bucket>.s3.<region>.amazonaws.com".
  for (const char* uri : {"s3://evil.example:8080#/x", "s3://attacker.com@s3/x", "s3://ab/x", "s3://UPPER/x",
                          "s3://a..b/x", "s3://-lead/x", "s3://trail-/x", "s3://192.168.1.1/x", "s3://under_score/x",
                          "s3://xn--punycode/x", "s3://bucket-s3alias/x", "s3://has space/x"}) {
    absl::Status s = ParseS3Uri(uri, &bucket, &key);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << uri;
    EXPECT_NE(s.message().find("invalid S3 bucket name"), absl::string_view::npos) << uri << ": " << s.message();
  }
  EXPECT_EQ(ValidateBucketName(std::string(64, 'a')).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(ValidateBucketName(std::string(63, 'a')).ok());
}

TEST(S3UriTest, KeysAreAtMost1024Bytes) {
  std::string bucket, key;
  EXPECT_TRUE(ParseS3Uri("s3://models/" + std::string(1024, 'k'), &bucket, &key).ok());
  EXPECT_EQ(ParseS3Uri("s3://models/" + std::string(1025, 'k'), &bucket, &key).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lowbit
