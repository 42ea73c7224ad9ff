"""lowbitd driven by Debian's python3-grpcio doing what grpcurl does: no lowbit proto files at all.

Services are listed and described through server reflection, request messages are built from the
descriptors the server returns and filled from JSON, responses are printed as JSON. Usage:
  grpc_python_test.py LOWBITD SHARED_DATA REFLECTION_PROTO_ROOT
"""
import json
import os
import subprocess
import sys
import tempfile
import time

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

from lowbitd import Lowbitd
from reflection_client import ReflectionClient

LOWBITD, SHARED, REFLECTION_ROOT = sys.argv[1:4]

def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


with Lowbitd(LOWBITD, SHARED) as server:
    channel = grpc.insecure_channel(server.address)
    client = ReflectionClient(channel, REFLECTION_ROOT)

    services = client.list_services()
    print("services:", services)
    for s in ["lowbit.v1.Quantizer", "google.longrunning.Operations", "grpc.health.v1.Health"]:
        check(s in services, "reflection lists " + s)

    quantizer = client.describe("lowbit.v1.Quantizer")
    methods = sorted(m.name for m in quantizer.methods)
    check(methods == ["CancelJob", "DeleteJob", "GetJob", "ListJobs", "QuantizeModel", "WatchJob"], "describe Quantizer: %s" % methods)
    file_proto = descriptor_pb2.FileDescriptorProto.FromString(quantizer.file.serialized_pb)
    watch = [m for svc in file_proto.service for m in svc.method if m.name == "WatchJob"][0]
    check(watch.server_streaming and not watch.client_streaming, "describe WatchJob: server streaming")
    client.describe("google.longrunning.Operations")
    client.describe("grpc.health.v1.Health")

    health = client.call("grpc.health.v1.Health", "Check", '{"service": ""}')
    check(client.to_json(health).find("SERVING") >= 0, "health: " + client.to_json(health).strip())

    op = client.call("lowbit.v1.Quantizer", "QuantizeModel", json.dumps({
        "sourceUri": "stories260K.bin", "destinationUri": "out/python-rtn4",
        "rtn": {"bits": 4, "groupSize": 32}, "requestId": "python-1"}))
    op_json = json.loads(client.to_json(op))
    print("QuantizeModel ->", op_json["name"], op_json["metadata"]["state"])
    check(op_json["metadata"]["@type"] == "type.googleapis.com/lowbit.v1.Job", "operation metadata is the Job")
    job_name = op_json["metadata"]["name"]

    again = json.loads(client.to_json(client.call("lowbit.v1.Quantizer", "QuantizeModel", json.dumps({
        "sourceUri": "stories260K.bin", "destinationUri": "out/python-rtn4",
        "rtn": {"bits": 4, "groupSize": 32}, "requestId": "python-1"}))))
    check(again["name"] == op_json["name"], "request_id makes QuantizeModel idempotent")

    deadline = time.time() + 60
    while True:
        job = json.loads(client.to_json(client.call("lowbit.v1.Quantizer", "GetJob", json.dumps({"name": job_name}))))
        if job["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") or time.time() > deadline:
            break
        time.sleep(0.05)
    check(job["state"] == "SUCCEEDED", "GetJob(JSON) reaches SUCCEEDED: %s" % job.get("error"))
    # stories260K's 172-wide MLP has no GPTQ form engines load: 20 layers quantized, 15 kept in FP16.
    check(len(job["layers"]) == 20 and job["layersDone"] == 20, "20 per-layer reports")
    check(all(0 < l["relativeError"] < 0.2 for l in job["layers"]), "per-layer relative errors in (0, 0.2)")

    got = json.loads(client.to_json(client.call("google.longrunning.Operations", "GetOperation",
                                                  json.dumps({"name": op_json["name"]}))))
    check(got["done"] is True, "Operations.GetOperation(JSON): done")
    check(got["response"]["@type"] == "type.googleapis.com/lowbit.v1.QuantizeResult", "response is the QuantizeResult")
    check(got["response"]["layersQuantized"] == "20", "result counts 20 layers")
    print(json.dumps(got["response"], indent=1)[:400])

    # Watch a second job from its first state to its end.
    op2 = client.call("lowbit.v1.Quantizer", "QuantizeModel", json.dumps({
        "sourceUri": "stories260K.bin", "destinationUri": "out/python-int8", "int8": {"symmetric": True}}))
    name2 = json.loads(client.to_json(op2))["metadata"]["name"]
    states = [json.loads(client.to_json(j))["state"] for j in
              client.call("lowbit.v1.Quantizer", "WatchJob", json.dumps({"name": name2}), stream=True)]
    print("WatchJob states:", states)
    check(states[-1] == "SUCCEEDED" and len(states) >= 2, "WatchJob streams to the end")

    # Every other method through the API, each with its parameters as JSON fields.
    calibration = {"tokenizerUri": "tok512.bin", "calibration": {"textUri": "tiny-shakespeare.txt", "samples": 8}}
    for method, params, fmt, extra in [
            ("awq", {"bits": 4, "groupSize": 32, "grid": 10}, "OUTPUT_FORMAT_AWQ", calibration),
            ("lut", {"bits": 3, "granularity": "PER_GROUPED_CHANNEL", "groupSize": 16, "perChannelScale": True},
             "OUTPUT_FORMAT_UNSPECIFIED", {}),
            ("vq", {"dim": 2, "bits": 2, "updateIterations": 0}, "OUTPUT_FORMAT_NATIVE", calibration),
            ("onebit", {"decomposition": "SVD", "refineIterations": 1}, "OUTPUT_FORMAT_NATIVE", calibration)]:
        request = dict({"sourceUri": "stories260K.bin", "destinationUri": "out/python-" + method, method: params,
                        "outputFormat": fmt}, **extra)
        name = json.loads(client.to_json(client.call("lowbit.v1.Quantizer", "QuantizeModel",
                                                     json.dumps(request))))["metadata"]["name"]
        last = [json.loads(client.to_json(j)) for j in
                client.call("lowbit.v1.Quantizer", "WatchJob", json.dumps({"name": name}), stream=True, timeout=120)][-1]
        check(last["state"] == "SUCCEEDED" and len(last["layers"]) == (20 if method == "awq" else 35) and
              all(l["method"] == method for l in last["layers"]),
              "%s job: %s, %.3f bits/weight" % (method, last["state"], last["result"]["bitsPerWeight"]
                                                if "result" in last else -1))
    try:
        client.call("lowbit.v1.Quantizer", "QuantizeModel", json.dumps({
            "sourceUri": "stories260K.bin", "destinationUri": "out/bad-lut", "lut": {"bits": 5}}))
        raise AssertionError("lut bits 5 accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "lut" in e.details(), "lut bits 5: " + e.details())

    listed = json.loads(client.to_json(client.call("lowbit.v1.Quantizer", "ListJobs",
                                                    json.dumps({"filter": "state=SUCCEEDED", "pageSize": 1}))))
    check(len(listed["jobs"]) == 1 and listed.get("nextPageToken"), "ListJobs pages and filters")

    # Errors carry google.rpc.Status details: ErrorInfo and BadRequest.
    try:
        client.call("lowbit.v1.Quantizer", "QuantizeModel", json.dumps({
            "sourceUri": "stories260K.bin", "destinationUri": "out/bad", "rtn": {"bits": 9}}))
        raise AssertionError("bits 9 accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "bits 9 -> INVALID_ARGUMENT: " + e.details())
        details = dict(e.trailing_metadata()).get("grpc-status-details-bin")
        status = client.message_class("google.rpc.Status").FromString(details)
        urls = [d.type_url for d in status.details]
        check("type.googleapis.com/google.rpc.BadRequest" in urls and
              "type.googleapis.com/google.rpc.ErrorInfo" in urls, "details: %s" % urls)
    for request, code in [({"sourceUri": "missing.bin", "destinationUri": "out/m", "rtn": {}}, grpc.StatusCode.NOT_FOUND),
                          ({"sourceUri": "stories260K.bin", "destinationUri": "out/python-rtn4", "rtn": {}},
                           grpc.StatusCode.ALREADY_EXISTS),
                          ({"sourceUri": "../outside.bin", "destinationUri": "out/o", "rtn": {}},
                           grpc.StatusCode.PERMISSION_DENIED)]:
        try:
            client.call("lowbit.v1.Quantizer", "QuantizeModel", json.dumps(request))
            raise AssertionError("accepted %s" % request)
        except grpc.RpcError as e:
            check(e.code() == code, "%s -> %s" % (request["sourceUri"], e.code()))
    try:
        client.call("lowbit.v1.Quantizer", "CancelJob", json.dumps({"name": job_name}))
        raise AssertionError("cancelled a finished job")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.FAILED_PRECONDITION, "cancel of a finished job -> FAILED_PRECONDITION")

    code = server.stop()
    check(code == 0, "SIGTERM: lowbitd exits 0")
print("python grpc e2e: all checks passed")
