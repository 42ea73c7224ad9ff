"""The checks of `make docker-test` against lowbitd running in its container: health on the plaintext
probe port, a job submitted and watched to SUCCEEDED with python3-grpcio (through reflection only), the
job's output in the mounted store, and /metrics counting it.
Usage: container_client.py GRPC_PORT METRICS_PORT HEALTH_PORT DATA_DIR REFLECTION_PROTO_ROOT"""
import json
import os
import sys
import time
import urllib.request

import grpc

from reflection_client import ReflectionClient

grpc_port, metrics_port, health_port = (int(p) for p in sys.argv[1:4])
DATA, REFLECTION_ROOT = sys.argv[4:6]


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


deadline = time.time() + 60
client = None
while True:  # the container takes a moment to listen
    try:
        client = ReflectionClient(grpc.insecure_channel("127.0.0.1:%d" % grpc_port), REFLECTION_ROOT)
        client.describe("grpc.health.v1.Health")
        break
    except grpc.RpcError:
        if time.time() > deadline:
            raise
        time.sleep(0.5)

probe = ReflectionClient(grpc.insecure_channel("127.0.0.1:%d" % health_port), REFLECTION_ROOT)
probe.pool, probe.factory = client.pool, client.factory  # the probe port serves health alone, no reflection
health = json.loads(probe.to_json(probe.call("grpc.health.v1.Health", "Check", '{"service": ""}')))
check(health.get("status") == "SERVING", "the probe port answers SERVING: %s" % health)

client.describe("lowbit.v1.Quantizer")
op = json.loads(client.to_json(client.call("lowbit.v1.Quantizer", "QuantizeModel", json.dumps({
    "sourceUri": "stories260K.bin", "destinationUri": "out/container-rtn4", "rtn": {"bits": 4, "groupSize": 32},
    "labels": {"test": "docker"}}))))
name = op["metadata"]["name"]
states = [json.loads(client.to_json(j))["state"] for j in
          client.call("lowbit.v1.Quantizer", "WatchJob", json.dumps({"name": name}), stream=True, timeout=300)]
check(states[-1] == "SUCCEEDED", "%s watched to %s through %d updates" % (name, states[-1], len(states)))
report = json.load(open(os.path.join(DATA, "out/container-rtn4/lowbit_report.json")))
check(report["summary"]["layers_quantized"] > 0, "the output is in the mounted store, written as uid 65534")

metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port, timeout=10).read().decode()
finished = [l for l in metrics.splitlines() if l.startswith("lowbit_jobs_finished_total") and 'succeeded' in l]
check(finished and float(finished[0].split()[-1]) >= 1, "/metrics counts the job: %s" % finished)
