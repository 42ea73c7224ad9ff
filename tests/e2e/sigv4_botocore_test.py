"""lowbit's SigV4 signer against botocore's S3 signer on the same random requests (methods, keys with
characters that need encoding, multipart-style queries, ranges, session tokens, regions).
Usage: sigv4_botocore_test.py LOWBIT_SIGV4  (run with a python that has botocore)"""
import datetime
import hashlib
import json
import random
import subprocess
import sys
import urllib.parse
from unittest import mock

import botocore.auth
import botocore.credentials
from botocore.awsrequest import AWSRequest

TOOL = sys.argv[1]
rng = random.Random(20261122)
KEY_CHARS = "abcXYZ019-_.~ /+=&$@!'()*,;:é"


def random_key():
    return "/".join("".join(rng.choice(KEY_CHARS) for _ in range(rng.randint(1, 12))).strip("/") or "k"
                    for _ in range(rng.randint(1, 3)))


cases = []
for i in range(300):
    method = rng.choice(["GET", "HEAD", "PUT", "POST", "DELETE"])
    bucket = rng.choice(["models", "my-bucket", "b.c"])
    key = random_key()
    host = rng.choice(["127.0.0.1:9000", "s3.eu-west-1.amazonaws.com", "%s.s3.amazonaws.com" % bucket])
    path = "/" + urllib.parse.quote(key, safe="/~")
    query = rng.choice([[], [["uploads", ""]], [["partNumber", str(rng.randint(1, 10000))], ["uploadId", "a/b+c=" + str(i)]],
                        [["list-type", "2"], ["prefix", key], ["continuation-token", "tok/+="]]])
    headers = {}
    if rng.random() < 0.4:
        headers["range"] = "bytes=%d-%d" % (rng.randint(0, 100), rng.randint(101, 10**9))
    body = b"" if method in ("GET", "HEAD", "DELETE") else bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64)))
    if body:
        headers["content-md5"] = "XUFAKrxLKna5cZ2REBfFkg=="
    token = rng.choice(["", "FQoGZXIvYXdzEXAMPLE/token+=="])
    region = rng.choice(["us-east-1", "eu-west-1", "ap-southeast-2"])
    when = rng.randint(1_500_000_000, 1_900_000_000)
    cases.append(dict(method=method, host=host, path=path, query=query, headers=headers,
                      payload_sha256=hashlib.sha256(body).hexdigest(), access_key="AKIDEXAMPLE%d" % i,
                      secret_key="secret/%d+key" % i, session_token=token, region=region, unix_time=when, body=body))

ours = subprocess.run([TOOL], input="\n".join(json.dumps({k: v for k, v in c.items() if k != "body"}) for c in cases),
                      capture_output=True, text=True, check=True).stdout.splitlines()

mismatches = 0
for c, mine in zip(cases, ours):
    query = "&".join("%s=%s" % (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~")) for k, v in c["query"])
    url = "http://%s%s%s" % (c["host"], c["path"], "?" + query if query else "")
    request = AWSRequest(method=c["method"], url=url, headers=dict(c["headers"]), data=c["body"])
    creds = botocore.credentials.Credentials(c["access_key"], c["secret_key"], c["session_token"] or None)
    fixed = datetime.datetime.fromtimestamp(c["unix_time"], datetime.timezone.utc).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: fixed):
        botocore.auth.S3SigV4Auth(creds, "s3", c["region"]).add_auth(request)
    theirs = request.headers["Authorization"]
    # botocore separates the three fields with ", ", AWS's examples with ","; both are valid.
    if theirs.replace(", ", ",") != mine:
        mismatches += 1
        if mismatches <= 3:
            print("MISMATCH for", url, c["headers"], "\n botocore:", theirs, "\n lowbit:  ", mine)
print("compared %d requests with botocore %s: %d mismatches" % (len(cases), botocore.__version__, mismatches))
sys.exit(1 if mismatches or len(ours) != len(cases) else 0)
