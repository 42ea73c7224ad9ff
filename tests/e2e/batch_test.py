"""`lowbit quantize` as a Kubernetes Job's container runs it: exit codes that tell permanent errors from
retryable ones (client/exit_code.h), progress as JSON lines, and --run-id: a run killed mid-job and run
again with the same id resumes from the shards it finished, byte-identical to an uninterrupted run,
and leaves no lock or staging behind; while it is interrupted, no other run can take its destination.
Usage: batch_test.py LOWBIT LOWBIT_SYNTH SHARED_DATA"""
import json
import os
import signal
import subprocess
import sys
import tempfile

from cli_client import check

LOWBIT, SYNTH, SHARED = sys.argv[1:4]
work = tempfile.mkdtemp(prefix="lowbit-batch-")
stories = os.path.join(SHARED, "models/stories260K/stories260K.bin")
env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
env["HOME"] = work


def run(*args, environment=env):
    return subprocess.run([LOWBIT, *args], capture_output=True, text=True, env=environment)


# Exit codes.
cases = [
    ("no command", [], 2),
    ("a missing checkpoint", ["quantize", "--input", os.path.join(work, "none.bin"), "--output", os.path.join(work, "o1")], 3),
    ("an invalid method parameter", ["quantize", "--input", stories, "--output", os.path.join(work, "o2"), "--bits", "99"], 3),
    ("a plan over the memory limit", ["quantize", "--input", stories, "--output", os.path.join(work, "o3"), "--memory-limit", "64K"], 4),
]
for what, args, code in cases:
    r = run(*args)
    check(r.returncode == code, "%s exits %d (got %d: %s)" % (what, code, r.returncode, r.stderr.strip()[-200:]))
unreachable = dict(env, AWS_ACCESS_KEY_ID="AKIA", AWS_SECRET_ACCESS_KEY="x", AWS_ENDPOINT_URL="http://127.0.0.1:9",
                   AWS_REGION="us-east-1")
r = subprocess.run([LOWBIT, "quantize", "--input", "s3://models/m.bin", "--output", os.path.join(work, "o4")],
                   capture_output=True, text=True, env=unreachable)
check(r.returncode == 75, "an unreachable object store is retryable: exits 75 (got %d: %s)" % (r.returncode, r.stderr.strip()[-200:]))

# JSON lines.
r = run("quantize", "--input", stories, "--output", os.path.join(work, "lines"), "--bits", "4", "--group-size", "32",
        "--progress-json")
events = [json.loads(line) for line in r.stdout.splitlines()]
kinds = [e["event"] for e in events]
check(r.returncode == 0 and kinds[0] == "start" and kinds[-1] == "end" and events[-1]["ok"],
      "--progress-json: every stdout line is a JSON event, start first, end last (%d lines)" % len(events))
layers = [e for e in events if e["event"] == "layer"]
check(len(layers) == events[0]["layers_total"] and all(0 < e["relative_error"] < 1 for e in layers),
      "one layer event per quantized layer (%d), each with its error" % len(layers))

# --run-id: killed, run again, resumed.
synth = os.path.join(work, "synth")
subprocess.check_call([SYNTH, "--shape=smollm2-135m", "--layers=6", "--vocab=8192", "--output=" + synth], stdout=subprocess.DEVNULL)
flags = ["--bits", "4", "--group-size", "64", "--shard-size", "2M", "--threads", "1"]
clean = os.path.join(work, "clean")
check(run("quantize", "--input", synth, "--output", clean, *flags).returncode == 0, "a clean run")
out = os.path.join(work, "resumed")
p = subprocess.Popen([LOWBIT, "quantize", "--input", synth, "--output", out, "--run-id", "job-1", "--progress-json", *flags],
                     stdout=subprocess.PIPE, text=True, env=env)
for line in p.stdout:
    e = json.loads(line)
    if e["event"] == "layer" and e["layers_done"] >= 20:
        break
p.send_signal(signal.SIGKILL)  # the node goes away
p.wait()
staged = os.listdir(os.path.join(out, ".lowbit-staging"))
check(os.path.exists(os.path.join(out, ".lowbit-lock")) and any(f.endswith(".safetensors") for f in staged),
      "the killed run left its lock and finished shards: %s" % sorted(staged)[:4])
r = run("quantize", "--input", synth, "--output", out, "--run-id", "job-2", *flags)
check(r.returncode == 3 and "lock" in r.stderr.lower(), "another run cannot take the destination meanwhile: %s" % r.stderr.strip()[-160:])
r = run("quantize", "--input", synth, "--output", out, "--run-id", "job-1", "--progress-json", *flags)
end = json.loads(r.stdout.splitlines()[-1])
check(r.returncode == 0 and end["ok"] and end.get("resumed"), "the retry with the same id resumed: %s" % end.get("resumed"))
files = sorted(f for f in os.listdir(out) if f != "lowbit_report.json")
check(files == sorted(f for f in os.listdir(clean) if f != "lowbit_report.json"), "the same files as the clean run")
differing = [f for f in files if open(os.path.join(out, f), "rb").read() != open(os.path.join(clean, f), "rb").read()]
check(not differing, "byte-identical to the clean run (differ: %s)" % differing)
check(not [f for f in os.listdir(out) if f.startswith(".lowbit")], "no lock or staging remains")
print("batch e2e: all checks passed")
