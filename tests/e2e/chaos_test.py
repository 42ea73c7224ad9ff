"""lowbitd killed with SIGKILL at seeded random moments while it runs several jobs (rtn and gptq, a local
store and moto's S3 behind a fault-injecting proxy), restarted after each kill. At the end every job
SUCCEEDED, every output is byte-identical to a clean local run, no partial file, staging, lock or open
multipart upload remains, and no job ran to completion twice.
Usage: chaos_test.py LOWBITD LOWBIT LOWBIT_SYNTH SHARED_DATA NODE_MODULES [SEED]"""
import difflib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from cli_client import CliClient, check
from lowbitd import Lowbitd
from s3_servers import FaultProxy, S3Server

LOWBITD, LOWBIT, SYNTH, SHARED, NODE_MODULES = sys.argv[1:6]
SEED = int(sys.argv[6]) if len(sys.argv) > 6 else 20261201
KILLS = 8
rng = random.Random(SEED)
work = tempfile.mkdtemp(prefix="lowbit-chaos-")

s3 = S3Server("moto", NODE_MODULES)
proxy = FaultProxy(s3.port, rate=0.1, seed=SEED)  # a tenth of S3 requests fail or stall
bucket = s3.client()
bucket.create_bucket(Bucket="models")
os.environ.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key, AWS_REGION="us-east-1",
                  AWS_ENDPOINT_URL=proxy.endpoint, HOME=work)

# --checkpoint_interval=0s: calibrated jobs save their hidden states at every block, so they resume too.
server = Lowbitd(LOWBITD, SHARED, ["--worker_threads=2", "--max_concurrent_jobs=2", "--grace_period=1s",
                                   "--checkpoint_interval=0s"])
client = CliClient(LOWBIT, server)
synth = os.path.join(server.store, "synth")
subprocess.check_call([SYNTH, "--shape=smollm2-135m", "--layers=4", "--output=" + synth], stdout=subprocess.DEVNULL)
os.makedirs(os.path.join(server.store, "stories"))  # a directory of its own, so both runs name the model alike
for f in ("stories260K.bin", "tok512.bin"):
    os.rename(os.path.join(server.store, f), os.path.join(server.store, "stories", f))
bucket.upload_file(os.path.join(synth, "model.safetensors"), "models", "synth/model.safetensors")
bucket.upload_file(os.path.join(synth, "config.json"), "models", "synth/config.json")

# name: (flags, source, destination); small shards so that data-free jobs have many to resume from.
SHARDS = ["--shard-size", "4M"]
JOBS = {
    "gptq": (["--method", "gptq", "--bits", "4", "--group-size", "32", "--calib", "tiny-shakespeare.txt",
              "--tokenizer", "stories/tok512.bin", "--calib-samples", "64", "--calib-seqlen", "256", "--act-order"], "stories/stories260K.bin", "out/gptq"),
    "rtn4": (["--bits", "4", "--group-size", "128"] + SHARDS, "synth", "out/rtn4"),
    "rtn8": (["--bits", "8", "--group-size", "64", "--mse-clip"] + SHARDS, "synth", "out/rtn8"),
    "s3": (["--bits", "4", "--group-size", "128"] + SHARDS, "s3://models/synth", "s3://models/out/s3"),
}

# The reference: each job run once, locally, from the same files, without interruption.
reference = {}
for name, (flags, source, _) in JOBS.items():
    out = os.path.join(work, "ref-" + name)
    local_source = os.path.join(server.store, "synth" if source.startswith("s3://") else source)
    extra = []
    for path_flag in ("--calib", "--tokenizer"):  # the local run reads these by path
        if path_flag in flags:
            at = flags.index(path_flag)
            flags = flags[:at] + [path_flag, os.path.join(server.store, flags[at + 1])] + flags[at + 2:]
    subprocess.check_call([LOWBIT, "quantize", "--input", local_source, "--output", out] + flags + extra,
                          stdout=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    reference[name] = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out) if f != "lowbit_report.json"}

names = {}
kills = 0
server.start()
for name, (flags, source, destination) in JOBS.items():
    names[name] = client.submit("--input", source, "--output", destination, "--request-id", "chaos-" + name, *flags)
started = time.time()
while kills < KILLS:
    time.sleep(rng.uniform(0.3, 2.5))
    states = {n: client.job(j)["state"] for n, j in names.items()}
    if all(s == "SUCCEEDED" for s in states.values()):
        break
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server.proc = None
    server.log.close()
    kills += 1
    server.start()
    # A retried submit (same request id) after a kill finds its job, never a second one.
    retried = client.submit("--input", JOBS["rtn4"][1], "--output", JOBS["rtn4"][2], "--request-id", "chaos-rtn4", *JOBS["rtn4"][0])
    check(retried == names["rtn4"], "a retried submit after kill %d gets the same job" % kills)

done = {n: client.wait_for(j, lambda j: j["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"), timeout=600) for n, j in names.items()}
elapsed = time.time() - started
check(server.stop() == 0, "lowbitd exits 0 after %d kills" % kills)
check(kills >= 3, "lowbitd was killed %d times mid-run (seed %d)" % (kills, SEED))
for name, job in done.items():
    check(job["state"] == "SUCCEEDED", "%s SUCCEEDED: %s" % (name, json.dumps(job.get("error", {}))[:200]))
resumed = {n: j["result"].get("resumed", "") for n, j in done.items()}
print("resumed: " + json.dumps(resumed))

def without_source(name, data):
    """The model card names the source and calibration text as they were given (local paths for the reference
    run): those spellings aside."""
    if name != "README.md" or data is None:
        return data
    for spelling in (("file://" + server.store + "/").encode(), b"s3://models/"):
        data = data.replace(spelling, b"")
    return data


# Byte-identical outputs.
for name, (_, _, destination) in JOBS.items():
    if destination.startswith("s3://"):
        prefix = destination[len("s3://models/"):] + "/"
        listed = bucket.list_objects_v2(Bucket="models", Prefix=prefix).get("Contents", [])
        got = {o["Key"][len(prefix):]: bucket.get_object(Bucket="models", Key=o["Key"])["Body"].read() for o in listed}
    else:
        root = os.path.join(server.store, destination)
        got = {}
        for d, _, files in os.walk(root):
            for f in files:
                got[os.path.relpath(os.path.join(d, f), root)] = open(os.path.join(d, f), "rb").read()
    got.pop("lowbit_report.json", None)
    check(sorted(got) == sorted(reference[name]), "%s: the same files as the clean run (%d)" % (name, len(got)))
    differing = sorted(f for f, b in reference[name].items() if without_source(f, got.get(f)) != without_source(f, b))
    for f in differing:
        if f.endswith((".md", ".json")):  # show how a text file differs
            print("".join(difflib.unified_diff(without_source(f, reference[name][f]).decode().splitlines(True),
                                               without_source(f, got.get(f) or b"").decode().splitlines(True)))[:2000])
    check(not differing, "%s: byte-identical to the clean run%s" % (name, (" (differ: %s)" % differing) if differing else ""))

# Nothing left behind.
leftovers = [os.path.join(d, f) for d, dirs, files in os.walk(server.store) for f in files + dirs
             if ".partial-" in f or f.startswith(".lowbit-")]
check(not leftovers, "no partial file, staging or lock remains in the local store: %s" % leftovers[:5])
keys = [o["Key"] for o in bucket.list_objects_v2(Bucket="models").get("Contents", [])]
check(not [k for k in keys if "/.lowbit-" in k], "no staging or lock remains in S3")
uploads = bucket.list_multipart_uploads(Bucket="models").get("Uploads", [])
check(not uploads, "no multipart upload is left open: %s" % [u["Key"] for u in uploads])

# No job ran to completion twice: lowbitd logs each job's end once, across every restart.
log = server.logs()
for name, job in names.items():
    ends = log.count("lowbitd: %s SUCCEEDED" % job)
    check(ends == 1, "%s completed exactly once (%d)" % (name, ends))
print("chaos: %d kills over %.1f s, %d jobs, %d resumed, %d S3 faults injected" % (
    kills, elapsed, len(JOBS), sum(1 for r in resumed.values() if r), sum(proxy.faults.values())))
server.__exit__(None, None, None)
proxy.stop()
s3.stop()
print("chaos e2e: all checks passed")
