"""Job lifecycle through lowbitd with the lowbit CLI: a failing job beside a healthy one, cancelling a
running job, and SIGTERM preempting a running job that then finishes after a restart.
Usage: lifecycle_test.py LOWBITD LOWBIT LOWBIT_SYNTH SHARED_DATA"""
import json
import os
import struct
import subprocess
import sys
import time

from cli_client import CliClient, check
from lowbitd import Lowbitd

LOWBITD, LOWBIT, SYNTH, SHARED = sys.argv[1:5]


# One worker and one tensor in flight make the clipping search slow enough to act on mid-run.
server = Lowbitd(LOWBITD, SHARED, ["--worker_threads=1", "--max_tensors_in_flight=1", "--max_concurrent_jobs=2",
                                   "--grace_period=1s"])
client = CliClient(LOWBIT, server)
with server:
    subprocess.check_call([SYNTH, "--shape=smollm2-135m", "--layers=2", "--output=" + os.path.join(server.store, "synth")],
                          stdout=subprocess.DEVNULL)
    # A checkpoint that passes every header check but holds a NaN weight: it fails while running.
    subprocess.check_call([LOWBIT, "convert", "--input", os.path.join(server.store, "stories260K.bin"),
                           "--output", os.path.join(server.store, "poisoned")], stdout=subprocess.DEVNULL)
    path = os.path.join(server.store, "poisoned", "model.safetensors")
    with open(path, "r+b") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        begin = header["model.layers.3.mlp.gate_proj.weight"]["data_offsets"][0]
        f.seek(8 + header_len + begin + 4 * 100)
        f.write(struct.pack("<f", float("nan")))

    healthy = client.submit("--input", "synth", "--output", "out/healthy", "--mse-clip", "--bits", "4")
    poisoned = client.submit("--input", "poisoned", "--output", "out/poisoned")
    failed = client.wait_for(poisoned, lambda j: j["state"] in ("FAILED", "SUCCEEDED"))
    check(failed["state"] == "FAILED", "the NaN checkpoint's job FAILED")
    check("model.layers.3.mlp.gate_proj.weight" in failed["error"]["message"] and "non-finite" in failed["error"]["message"],
          "its error names the tensor: " + failed["error"]["message"][:160])
    check(not os.path.exists(os.path.join(server.store, "out/poisoned")), "the failed job left no output")
    running = client.job(healthy)
    check(running["state"] == "RUNNING", "the healthy job beside it runs on (%s layers done)" % running.get("layersDone", 0))

    code, out, _ = client.run("watch", poisoned)
    check(code != 0, "lowbit watch exits non-zero for a failed job")

    # Cancel the healthy job mid-run: it stops within one tensor and leaves nothing.
    client.wait_for(healthy, lambda j: j.get("layersDone", 0) >= 1)
    cancel_at = time.time()
    code, out, err = client.run("cancel", healthy)
    check(code == 0, "lowbit cancel: " + out.strip())
    cancelled = client.wait_for(healthy, lambda j: j["state"] not in ("RUNNING", "QUEUED"), timeout=30)
    check(cancelled["state"] == "CANCELLED", "cancelled %.2f s after the request, at %s/%s layers" % (
        time.time() - cancel_at, cancelled.get("layersDone", 0), cancelled["layersTotal"]))
    check(not os.path.exists(os.path.join(server.store, "out/healthy")), "the cancelled job left no output")

    # SIGTERM while a job runs: after the grace period it is preempted back to QUEUED, lowbitd exits 0,
    # and after a restart the job runs again to the end.
    survivor = client.submit("--input", "synth", "--output", "out/survivor", "--mse-clip", "--bits", "3")
    client.wait_for(survivor, lambda j: j["state"] == "RUNNING")
    # A second job for the same destination, even with overwrite, is refused while the first holds it.
    code, out, err = client.run("submit", "--input", "synth", "--output", "out/survivor", "--overwrite")
    check(code != 0 and "FAILED_PRECONDITION" in err and survivor in err,
          "a second job for a held destination is refused: " + err.strip()[:200])
    check(server.stop() == 0, "SIGTERM with a running job: lowbitd exits 0")
    leftover = os.path.join(server.store, "out/survivor")
    left = sorted(os.listdir(leftover)) if os.path.exists(leftover) else []
    check([f for f in left if not f.startswith(".lowbit-")] == [] and ".lowbit-lock" in left,
          "the preempted job left nothing that looks like output, only its lock and staging: %s" % left)
    lock = json.load(open(os.path.join(leftover, ".lowbit-lock")))
    check(lock["owner"] == survivor, "the lock names the job: %s" % lock["owner"])
    server.start()
    done = client.wait_for(survivor, lambda j: j["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"), timeout=300)
    check(done["state"] == "SUCCEEDED", "after the restart the job ran to SUCCEEDED")
    check(os.path.exists(os.path.join(server.store, "out/survivor/lowbit_report.json")), "its output is committed")
    check(sorted(f for f in os.listdir(os.path.join(server.store, "out/survivor")) if f.startswith(".lowbit")) == [],
          "and neither lock nor staging remains")
    check(client.job(poisoned)["state"] == "FAILED", "finished jobs survive the restart")
    check(server.stop() == 0, "lowbitd exits 0")
print("lifecycle e2e: all checks passed")
