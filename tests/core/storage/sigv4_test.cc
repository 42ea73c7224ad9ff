// SigV4 against AWS's published S3 examples ("Signature Calculations for the Authorization Header:
// Transferring Payload in a Single Chunk"), which use these example credentials.
#include "core/storage/sigv4.h"

#include "gtest/gtest.h"

namespace lowbit {
namespace {

const AwsCredentials kExample{"AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", ""};
constexpr char kEmptySha[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

absl::Time May24() { return absl::FromCivil(absl::CivilSecond(2013, 5, 24, 0, 0, 0), absl::UTCTimeZone()); }

std::string SignatureOf(const std::map<std::string, std::string>& headers) {
  const std::string& auth = headers.at("authorization");
  return auth.substr(auth.find("Signature=") + 10);
}

TEST(SigV4Test, AwsExampleGetObjectWithRange) {
  SigV4Request r{"GET", "examplebucket.s3.amazonaws.com", "/test.txt", {}, {{"range", "bytes=0-9"}}, kEmptySha};
  const auto headers = SignV4(r, kExample, "us-east-1", "s3", May24());
  EXPECT_EQ(headers.at("authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
            "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,"
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
  EXPECT_EQ(headers.at("x-amz-date"), "20130524T000000Z");
  EXPECT_EQ(headers.count("x-amz-security-token"), 0u);
}

TEST(SigV4Test, AwsExamplePutObject) {
  // PUT /test$file.text with a body of "Welcome to Amazon S3.", a Date header and a storage class.
  const std::string body = "Welcome to Amazon S3.";
  SigV4Request r{"PUT", "examplebucket.s3.amazonaws.com", "/" + UriEncode("test$file.text", true), {},
                 {{"date", "Fri, 24 May 2013 00:00:00 GMT"}, {"x-amz-storage-class", "REDUCED_REDUNDANCY"}},
                 Sha256Hex(body)};
  EXPECT_EQ(r.payload_sha256, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
  EXPECT_EQ(r.path, "/test%24file.text");
  EXPECT_EQ(SignatureOf(SignV4(r, kExample, "us-east-1", "s3", May24())),
            "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd");
}

TEST(SigV4Test, AwsExampleGetBucketLifecycle) {
  SigV4Request r{"GET", "examplebucket.s3.amazonaws.com", "/", {{"lifecycle", ""}}, {}, kEmptySha};
  EXPECT_EQ(SignatureOf(SignV4(r, kExample, "us-east-1", "s3", May24())),
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
}

TEST(SigV4Test, AwsExampleListObjects) {
  SigV4Request r{"GET", "examplebucket.s3.amazonaws.com", "/", {{"max-keys", "2"}, {"prefix", "J"}}, {}, kEmptySha};
  EXPECT_EQ(SignatureOf(SignV4(r, kExample, "us-east-1", "s3", May24())),
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
}

TEST(SigV4Test, SessionTokenIsSentAndSigned) {
  AwsCredentials temporary = kExample;
  temporary.session_token = "FQoGZXIvYXdzEXAMPLETOKEN";
  SigV4Request r{"GET", "examplebucket.s3.amazonaws.com", "/test.txt", {}, {}, kEmptySha};
  const auto headers = SignV4(r, temporary, "us-east-1", "s3", May24());
  EXPECT_EQ(headers.at("x-amz-security-token"), "FQoGZXIvYXdzEXAMPLETOKEN");
  EXPECT_NE(headers.at("authorization").find("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token"),
            std::string::npos);
  EXPECT_NE(SignatureOf(headers), SignatureOf(SignV4(r, kExample, "us-east-1", "s3", May24())));
}

TEST(SigV4Test, EncodingAndCanonicalQuery) {
  EXPECT_EQ(UriEncode("a b/c~d_e.f-g+h=&", true), "a%20b/c~d_e.f-g%2Bh%3D%26");
  EXPECT_EQ(UriEncode("a/b", false), "a%2Fb");
  EXPECT_EQ(UriEncode("\xc3\xa9", false), "%C3%A9");
  // Sorted by name after encoding; empty values keep their '='.
  EXPECT_EQ(CanonicalQuery({{"uploadId", "x/y"}, {"partNumber", "2"}, {"uploads", ""}}),
            "partNumber=2&uploadId=x%2Fy&uploads=");
}

TEST(SigV4Test, SecretNeverAppearsInHeaders) {
  SigV4Request r{"GET", "h", "/k", {}, {}, kEmptySha};
  for (const auto& [k, v] : SignV4(r, kExample, "us-east-1", "s3", May24())) {
    EXPECT_EQ(v.find(kExample.secret_access_key), std::string::npos) << k;
  }
}

TEST(SigV4Test, ContentMd5IsBase64) { EXPECT_EQ(ContentMd5(""), "1B2M2Y8AsgTpgAmY7PhCfg=="); }

}  // namespace
}  // namespace lowbit
