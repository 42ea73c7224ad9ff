"""IAM Roles for Service Accounts: lowbit with no keys, only AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE (as
EKS injects them), gets temporary credentials from moto's STS (AssumeRoleWithWebIdentity) and signs every
S3 request with them and their session token; the secret is never printed; a missing token file is a clear
error. A recording proxy in front of moto shows what lowbit really sent.
Usage: irsa_test.py LOWBIT SHARED_DATA NODE_MODULES"""
import os
import re
import subprocess
import sys
import tempfile

from cli_client import check
from s3_servers import FaultProxy, S3Server

LOWBIT, SHARED, NODE_MODULES = sys.argv[1:4]
work = tempfile.mkdtemp(prefix="lowbit-irsa-")
s3 = S3Server("moto", NODE_MODULES)
proxy = FaultProxy(s3.port)
bucket = s3.client()
bucket.create_bucket(Bucket="models")
bucket.upload_file(os.path.join(SHARED, "models/stories260K/stories260K.bin"), "models", "stories260K.bin")
token_file = os.path.join(work, "token")
with open(token_file, "w") as f:  # the projected service account token, a JWT (STS checks it; moto does not)
    f.write("eyJhbGciOiJSUzI1NiIsImtpZCI6Imxvd2JpdCJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bG93Yml0In0.c2ln\n")
env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
env.update(HOME=work, AWS_REGION="us-east-1", AWS_ENDPOINT_URL=proxy.endpoint,
           AWS_ROLE_ARN="arn:aws:iam::123456789012:role/lowbit", AWS_WEB_IDENTITY_TOKEN_FILE=token_file,
           AWS_ROLE_SESSION_NAME="lowbit-test")


def quantize(output, environment):
    return subprocess.run([LOWBIT, "quantize", "--input", "s3://models/stories260K.bin", "--output", output,
                           "--bits", "4", "--group-size", "32"], capture_output=True, text=True, env=environment)


r = quantize("s3://models/out/irsa", env)
check(r.returncode == 0, "lowbit quantize with only a web identity succeeds: %s" % r.stderr[-500:])
check(len(proxy.sts_answers) >= 1, "it called AssumeRoleWithWebIdentity (%d times)" % len(proxy.sts_answers))
answer = proxy.sts_answers[0]
key_id = re.search("<AccessKeyId>(.*?)</AccessKeyId>", answer).group(1)
secret = re.search("<SecretAccessKey>(.*?)</SecretAccessKey>", answer).group(1)
token = re.search("<SessionToken>(.*?)</SessionToken>", answer).group(1)
s3_requests = [signed for signed in proxy.signed if signed[0] is not None]
check(s3_requests and all(k == key_id and t == token for k, t in s3_requests),
      "all %d S3 requests are signed with STS's key %s and carry its session token" % (len(s3_requests), key_id))
check(secret not in r.stdout + r.stderr and token not in r.stdout + r.stderr, "neither secret nor token is printed")
listed = [o["Key"] for o in bucket.list_objects_v2(Bucket="models", Prefix="out/irsa/").get("Contents", [])]
check("out/irsa/lowbit_report.json" in listed, "the output was committed (%d objects)" % len(listed))

missing = dict(env, AWS_WEB_IDENTITY_TOKEN_FILE=os.path.join(work, "no-such-token"))
r = quantize("s3://models/out/irsa-missing", missing)
check(r.returncode != 0 and "AWS_WEB_IDENTITY_TOKEN_FILE" in r.stderr,
      "a missing token file fails clearly: %s" % r.stderr.strip()[-300:])
check(not bucket.list_objects_v2(Bucket="models", Prefix="out/irsa-missing/").get("Contents"), "and writes nothing")
proxy.stop()
s3.stop()
print("irsa e2e: all checks passed")
