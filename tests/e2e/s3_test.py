"""lowbit against real S3 servers on loopback (moto_server and s3rver), checked with boto3: s3:// to s3://
jobs give output byte-identical to a local run, large outputs really use multipart, failures abort their
uploads and leave nothing, errors name the URI and never the secret, a job through lowbitd works, and a
fault-injecting proxy (500, 503 SlowDown, resets, delays) changes nothing but the request count.
Usage: s3_test.py LOWBIT LOWBITD LOWBIT_SYNTH SHARED_DATA NODE_MODULES"""
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

from s3_servers import FaultProxy, S3Server
from lowbitd import Lowbitd

LOWBIT, LOWBITD, SYNTH, SHARED, NODE_MODULES = sys.argv[1:6]
work = tempfile.mkdtemp(prefix="lowbit-s3-")


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


def env_for(server, endpoint=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key, AWS_REGION="us-east-1",
               HOME=work, AWS_ENDPOINT_URL=endpoint or server.endpoint)
    return env


def lowbit(server, endpoint, *args):
    return subprocess.run([LOWBIT, *args], env=env_for(server, endpoint), capture_output=True, text=True)


def sha(data):
    return hashlib.sha256(data).hexdigest()


# Inputs and the local reference outputs the S3 runs must reproduce byte for byte.
model = os.path.join(SHARED, "models/stories260K/stories260K.bin")
synth = os.path.join(work, "synth")
subprocess.check_call([SYNTH, "--shape=smollm2-135m", "--layers=2", "--output=" + synth], stdout=subprocess.DEVNULL)
poisoned = os.path.join(work, "poisoned")
shutil.copytree(synth, poisoned)
with open(os.path.join(poisoned, "model.safetensors"), "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    f.seek(8 + n + header["model.layers.1.self_attn.v_proj.weight"]["data_offsets"][0])
    f.write(b"\xc0\x7f")  # a BF16 NaN in the last block, after earlier parts have been uploaded
reference = {}
for name, src in [("stories", model), ("synth", synth)]:
    out = os.path.join(work, "local-" + name)
    r = subprocess.run([LOWBIT, "quantize", "--input", src, "--output", out, "--bits", "4", "--group-size", "32"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    reference[name] = {f: sha(open(os.path.join(out, f), "rb").read())
                       for f in ["model.safetensors", "config.json", "quantize_config.json"]}


def objects(s3, prefix):
    listed = s3.list_objects_v2(Bucket="models", Prefix=prefix)
    return {o["Key"][len(prefix):]: o for o in listed.get("Contents", [])}


def same_as_local(s3, prefix, name):
    return all(sha(s3.get_object(Bucket="models", Key=prefix + f)["Body"].read()) == digest
               for f, digest in reference[name].items())


for kind in ["moto", "s3rver"]:
    server = S3Server(kind, NODE_MODULES)
    try:
        s3 = server.client()
        s3.create_bucket(Bucket="models")
        s3.upload_file(model, "models", "stories260K/stories260K.bin")
        for d, prefix in [(synth, "synth/"), (poisoned, "poisoned/")]:
            for f in os.listdir(d):
                s3.upload_file(os.path.join(d, f), "models", prefix + f)

        r = lowbit(server, server.endpoint, "quantize", "--input", "s3://models/stories260K/stories260K.bin",
                   "--output", "s3://models/out/stories", "--bits", "4", "--group-size", "32")
        check(r.returncode == 0, "[%s] quantize s3:// -> s3://: %s" % (kind, (r.stdout.splitlines() or [r.stderr])[-1]))
        check(same_as_local(s3, "out/stories/", "stories"), "[%s] stories260K output byte-identical to the local run" % kind)
        check("lowbit_report.json" in objects(s3, "out/stories/"), "[%s] the report (commit marker) is there" % kind)

        if kind == "moto":
            # A destination another job holds (its lock object, as a server elsewhere would have made it) is
            # refused and left alone; moto honours If-None-Match: * as S3 does (s3rver ignores it).
            s3.put_object(Bucket="models", Key="out/held/.lowbit-lock", Body=b'{"owner": "jobs/elsewhere"}')
            r = lowbit(server, server.endpoint, "quantize", "--input", "s3://models/stories260K/stories260K.bin",
                       "--output", "s3://models/out/held", "--overwrite")
            check(r.returncode != 0 and "jobs/elsewhere" in r.stderr, "[moto] a held destination is refused: %s" % r.stderr.strip()[-200:])
            check(list(objects(s3, "out/held/")) == [".lowbit-lock"], "[moto] and nothing was written there")
            # An upload a killed writer left open under the destination is aborted by the next job there.
            s3.create_multipart_upload(Bucket="models", Key="out/synth/.lowbit-staging/model.safetensors")

        # Through a pass-through proxy, to see on the wire that the large output went up in parts.
        tap = FaultProxy(server.port, rate=0.0)
        r = lowbit(server, tap.endpoint, "quantize", "--input", "s3://models/synth", "--output", "s3://models/out/synth",
                   "--bits", "4", "--group-size", "32")
        tap.stop()
        check(r.returncode == 0, "[%s] synthetic SmolLM2-shaped model through S3: %s" % (kind, r.stderr[-300:]))
        check(same_as_local(s3, "out/synth/", "synth"), "[%s] synthetic output byte-identical to the local run" % kind)
        parts = [p for m, p in tap.paths if m == "PUT" and "model.safetensors" in p and "partNumber=" in p]
        size = s3.head_object(Bucket="models", Key="out/synth/model.safetensors")["ContentLength"]
        check(len(parts) >= 2 and any(m == "POST" and "uploadId=" in p for m, p in tap.paths),
              "[%s] the %d-byte model.safetensors went up as a %d-part multipart upload" % (kind, size, len(parts)))
        staged = [p for m, p in tap.paths if m == "PUT" and ".lowbit-staging/model.safetensors" in p and "partNumber=" in p]
        check(len(staged) == len(parts), "[%s] every part went to the staging prefix, the model moved in at the commit" % kind)
        check(not [k for k in objects(s3, "out/synth/") if k.startswith(".lowbit")],
              "[%s] neither the lock nor staging remains after the commit" % kind)
        if kind == "moto":  # s3rver has no ListMultipartUploads
            open_uploads = s3.list_multipart_uploads(Bucket="models").get("Uploads", [])
            check(not open_uploads, "[moto] no multipart upload is left open: %s" % open_uploads)

        # --s3-endpoint instead of AWS_ENDPOINT_URL.
        env = env_for(server)
        del env["AWS_ENDPOINT_URL"]
        r = subprocess.run([LOWBIT, "quantize", "--input", "s3://models/stories260K/stories260K.bin", "--output",
                            "s3://models/out/flag", "--s3-endpoint", server.endpoint, "--method", "int8"],
                           env=env, capture_output=True, text=True)
        check(r.returncode == 0, "[%s] --s3-endpoint flag" % kind)

        # A job that fails after uploading parts: nothing visible, no multipart upload left open.
        tap = FaultProxy(server.port, rate=0.0)
        r = lowbit(server, tap.endpoint, "quantize", "--input", "s3://models/poisoned", "--output", "s3://models/out/poisoned")
        tap.stop()
        check(r.returncode != 0 and "model.layers.1.self_attn.v_proj.weight" in r.stderr,
              "[%s] NaN weights fail the job: %s" % (kind, r.stderr.strip()[:150]))
        check(not objects(s3, "out/poisoned/"), "[%s] the failed job left no objects" % kind)
        started = [p for m, p in tap.paths if m == "PUT" and "partNumber=" in p]
        aborted = [p for m, p in tap.paths if m == "DELETE" and "uploadId=" in p]
        check(started and aborted, "[%s] it had uploaded %d parts and aborted its multipart upload" % (kind, len(started)))
        if kind == "moto":  # s3rver does not implement ListMultipartUploads
            uploads = s3.list_multipart_uploads(Bucket="models").get("Uploads", [])
            check(not [u for u in uploads if u["Key"].startswith("out/")], "[moto] S3 lists no open multipart uploads")

        r = lowbit(server, server.endpoint, "quantize", "--input", "s3://models/nothing.bin", "--output", "s3://models/out/x")
        check(r.returncode != 0 and "s3://models/nothing.bin" in r.stderr and "NOT_FOUND" in r.stderr,
              "[%s] missing object: %s" % (kind, r.stderr.strip()[:160]))
        check(server.secret_key not in r.stderr + r.stdout, "[%s] the secret is not printed" % kind)
        r = lowbit(server, server.endpoint, "quantize", "--input", "s3://models/stories260K/stories260K.bin",
                   "--output", "s3://models/out/stories")
        check(r.returncode != 0 and "ALREADY_EXISTS" in r.stderr, "[%s] occupied destination -> ALREADY_EXISTS" % kind)
    finally:
        server.stop()

# A job through lowbitd with s3:// source and destination, and the object-store metrics.
server = S3Server("moto", NODE_MODULES)
try:
    s3 = server.client()
    s3.create_bucket(Bucket="models")
    s3.upload_file(model, "models", "stories260K/stories260K.bin")
    os.environ.update(env_for(server))
    with Lowbitd(LOWBITD, SHARED) as daemon:
        r = subprocess.run([LOWBIT, "submit", "--server", daemon.address, "--input", "s3://models/stories260K/stories260K.bin",
                            "--output", "s3://models/out/served", "--bits", "4", "--group-size", "32", "--watch"],
                           capture_output=True, text=True)
        check(r.returncode == 0, "lowbitd job s3:// -> s3://: " + (r.stdout.splitlines() or [r.stderr])[-1])
        check(same_as_local(s3, "out/served/", "stories"), "server output byte-identical to the local run")
        metrics = urllib.request.urlopen(daemon.metrics_url).read().decode()
        gets = [l for l in metrics.splitlines() if l.startswith('lowbit_object_store_requests_total{') and 'op="get"' in l]
        check(gets and 'code="206"' in gets[0], "metrics count S3 requests: " + gets[0])
        r = subprocess.run([LOWBIT, "get", "--server", daemon.address, "--json",
                            json.loads(subprocess.run([LOWBIT, "list", "--server", daemon.address, "--json"],
                                                      capture_output=True, text=True).stdout)["jobs"][0]["name"]],
                           capture_output=True, text=True)
        check(server.secret_key not in r.stdout and server.access_key not in r.stdout, "job records hold no credentials")
        check(server.secret_key not in daemon.logs() + metrics, "nor do the server's logs and metrics")
        check(daemon.stop() == 0, "lowbitd exits 0")

    # Faults between lowbit and S3: 30% of requests fail or stall; the job still succeeds, identically.
    proxy = FaultProxy(server.port, rate=0.3, seed=7)
    s3.upload_file(os.path.join(synth, "model.safetensors"), "models", "synth/model.safetensors")
    s3.upload_file(os.path.join(synth, "config.json"), "models", "synth/config.json")
    r = lowbit(server, proxy.endpoint, "quantize", "--input", "s3://models/synth", "--output", "s3://models/out/faulty",
               "--bits", "4", "--group-size", "32")
    check(r.returncode == 0, "job through a 30%% fault proxy succeeds (%d requests, faults %s): %s" % (
        proxy.requests, proxy.faults, r.stderr[-200:]))
    check(sum(proxy.faults.values()) > 5, "faults were injected")
    check(same_as_local(s3, "out/faulty/", "synth"), "output under faults byte-identical to the local run")

    proxy.rate, proxy.kinds = 1.0, ["500", "503", "reset"]
    started = time.time()
    r = lowbit(server, proxy.endpoint, "quantize", "--input", "s3://models/stories260K/stories260K.bin", "--output", "s3://models/out/dead")
    elapsed = time.time() - started
    check(r.returncode != 0 and "gave up after 6 attempts" in r.stderr,
          "100%% faults: fails after bounded retries in %.1f s: %s" % (elapsed, r.stderr.strip()[:200]))
    check(elapsed < 60, "bounded time")

    proxy.rate, proxy.forbidden = 0.0, True
    before = proxy.requests
    r = lowbit(server, proxy.endpoint, "quantize", "--input", "s3://models/stories260K/stories260K.bin", "--output", "s3://models/out/denied")
    check(r.returncode != 0 and "PERMISSION_DENIED" in r.stderr and "s3://models/stories260K/stories260K.bin" in r.stderr,
          "403 is not retried and names the URI: %s (%d request)" % (r.stderr.strip()[:160], proxy.requests - before))
    check(proxy.requests - before == 1, "exactly one request for a 403")
    proxy.stop()
finally:
    server.stop()
    shutil.rmtree(work, ignore_errors=True)
print("s3 e2e: all checks passed")
