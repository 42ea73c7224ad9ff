"""Three lowbitd replicas sharing a PostgreSQL job store (a server of the test's own) and moto's S3.

takeover: 12 jobs (rtn and gptq) submitted through one replica and watched through another; one replica
killed with SIGKILL mid-job (and started again, as a pod would be), another stopped with SIGTERM mid-job,
PostgreSQL restarted mid-run. At the end all 12 SUCCEEDED, each output byte-identical to a single-node
run, and no job completed twice: counted from the records (PostgreSQL), the replicas' logs, and the store
(the bucket is versioned: each report was written once).

outage: PostgreSQL stopped while a job runs: submits fail UNAVAILABLE, the running job finishes and
commits, and once PostgreSQL is back its record says SUCCEEDED, on every replica.

Usage: fleet_test.py takeover|outage LOWBITD LOWBIT LOWBIT_SYNTH SHARED_DATA NODE_MODULES"""
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from cli_client import CliClient, check
from lowbitd import Lowbitd
from postgres_server import Postgres
from s3_servers import S3Server

SCENARIO, LOWBITD, LOWBIT, SYNTH, SHARED, NODE_MODULES = sys.argv[1:7]
work = tempfile.mkdtemp(prefix="lowbit-fleet-")
started = time.time()

pg = Postgres()
s3 = S3Server("moto", NODE_MODULES)
bucket = s3.client()
bucket.create_bucket(Bucket="models")
bucket.put_bucket_versioning(Bucket="models", VersioningConfiguration={"Status": "Enabled"})
os.environ.update(AWS_ACCESS_KEY_ID=s3.access_key, AWS_SECRET_ACCESS_KEY=s3.secret_key, AWS_REGION="us-east-1",
                  AWS_ENDPOINT_URL=s3.endpoint, HOME=work)

local = os.path.join(work, "local")
synth = os.path.join(local, "synth")
subprocess.check_call([SYNTH, "--shape=smollm2-135m", "--layers=3", "--vocab=8192", "--output=" + synth],
                      stdout=subprocess.DEVNULL)
# The reference runs read the same layout locally (links to the shared data), so model cards name alike.
os.makedirs(os.path.join(local, "stories"))
for name in ("stories260K.bin", "tok512.bin"):
    os.symlink(os.path.join(SHARED, "models/stories260K", name), os.path.join(local, "stories", name))
os.symlink(os.path.join(SHARED, "text/tiny-shakespeare.txt"), os.path.join(local, "tiny-shakespeare.txt"))
stories = os.path.join(local, "stories")
text = os.path.join(local, "tiny-shakespeare.txt")
for path, key in ((os.path.join(synth, "model.safetensors"), "synth/model.safetensors"),
                  (os.path.join(synth, "config.json"), "synth/config.json"),
                  (os.path.join(stories, "stories260K.bin"), "stories/stories260K.bin"),
                  (os.path.join(stories, "tok512.bin"), "stories/tok512.bin"), (text, "tiny-shakespeare.txt")):
    bucket.upload_file(path, "models", key)

GPTQ = ["--method", "gptq", "--bits", "4", "--group-size", "32", "--calib-samples", "64", "--calib-seqlen", "256",
        "--act-order"]
CONFIGS = {  # name: (flags, source in S3, local source, local calibration files)
    "rtn4": (["--bits", "4", "--group-size", "128", "--shard-size", "4M"], "synth", synth, []),
    "rtn8": (["--bits", "8", "--group-size", "64", "--shard-size", "4M"], "synth", synth, []),
    "gptq": (GPTQ, "stories/stories260K.bin", os.path.join(stories, "stories260K.bin"),
             [("--calib", "tiny-shakespeare.txt", text), ("--tokenizer", "stories/tok512.bin", os.path.join(stories, "tok512.bin"))]),
}


def remote_flags(config):
    flags, _, _, calib = CONFIGS[config]
    return flags + [x for flag, key, _ in calib for x in (flag, "s3://models/" + key)]


# The single-node reference of each configuration, local files in and out.
reference = {}
for config, (flags, _, source, calib) in CONFIGS.items():
    out = os.path.join(work, "ref-" + config)
    t = time.time()
    subprocess.check_call([LOWBIT, "quantize", "--input", source, "--output", out] + flags +
                          [x for flag, _, path in calib for x in (flag, path)], stdout=subprocess.DEVNULL,
                          env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
    reference[config] = {f: open(os.path.join(out, f), "rb").read() for f in os.listdir(out) if f != "lowbit_report.json"}
    print("reference %s: %.1f s" % (config, time.time() - t))


def replica(name, lease):
    return Lowbitd(LOWBITD, SHARED, ["--job_store=" + pg.uri, "--replica=" + name, "--lease=%ds" % lease,
                                     "--worker_threads=1", "--max_concurrent_jobs=1", "--grace_period=1s",
                                     "--checkpoint_interval=0s", "--memory_limit=4GiB"])


def restart_as(server, name):
    """A replica started again, as Kubernetes restarts a pod: a new process, a new name in claims."""
    server.extra_args = [a if not a.startswith("--replica=") else "--replica=" + name for a in server.extra_args]
    server.start()


def kill(server):
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    server.proc = None
    server.log.close()


def same_as_reference(config, destination):
    prefix = destination[len("s3://models/"):] + "/"
    listed = bucket.list_objects_v2(Bucket="models", Prefix=prefix).get("Contents", [])
    got = {o["Key"][len(prefix):]: bucket.get_object(Bucket="models", Key=o["Key"])["Body"].read() for o in listed}
    got.pop("lowbit_report.json", None)
    # The model card names the source as given: an S3 URI here, a local path in the reference.
    def card(f, data):
        if f != "README.md" or data is None:
            return data
        for spelling in (b"s3://models/", ("file://" + local + "/").encode(), (local + "/").encode()):
            data = data.replace(spelling, b"")
        return data
    differing = sorted(f for f in set(got) | set(reference[config]) if card(f, got.get(f)) != card(f, reference[config].get(f)))
    return differing


def wait(predicate, what, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def records():
    """Each job's record as PostgreSQL holds it."""
    return {row[0]: json.loads(row[1]) for row in pg.query("SELECT id, record::text FROM lowbit_jobs")}


def takeover():
    a, b, c = replica("a-1", 3), replica("b-1", 3), replica("c-1", 3)
    for server in (a, b, c):
        server.start()
    via_a, via_c = CliClient(LOWBIT, a), CliClient(LOWBIT, c)
    jobs = {}  # job name -> (config, destination)
    for i in range(12):
        config = ("rtn4", "gptq", "rtn8")[i % 3]
        destination = "s3://models/out/job-%02d" % i
        name = via_c.submit("--input", "s3://models/" + CONFIGS[config][1], "--output", destination,
                            "--request-id", "fleet-%02d" % i, "--label", "fleet=takeover", *remote_flags(config))
        jobs[name] = (config, destination)
    last = list(jobs)[-1]
    submitted = time.time()
    # AIP-155 across the fleet: the same request through another replica is the same job.
    first = list(jobs)[0]
    again = via_a.submit("--input", "s3://models/" + CONFIGS["rtn4"][1], "--output", jobs[first][1],
                         "--request-id", "fleet-00", "--label", "fleet=takeover", *remote_flags("rtn4"))
    check(again == first, "a retried submit through another replica returns the same job (%s)" % again)
    # Submitted through c, watched through a: the watch sees another replica's job through notifications.
    watcher = subprocess.Popen([LOWBIT, "watch", last, "--server", a.address, "--json"], stdout=subprocess.PIPE, text=True)

    def listed(client):
        code, out, err = client.run("list", "--filter", 'labels.fleet = "takeover"', "--json")
        assert code == 0, err
        return json.loads(out).get("jobs", [])

    def running_on(client, replica_name, configs=CONFIGS):
        for j in listed(client):
            if (j["state"] == "RUNNING" and j.get("replica") == replica_name and int(j.get("phaseDone", 0)) >= 1 and
                    jobs[j["name"]][0] in configs):
                return j["name"]
        return None

    killed = wait(lambda: running_on(via_a, "c-1"), "a job running on replica c-1")
    kill(c)
    print("SIGKILL replica c-1 while it ran %s (%s)" % (killed, jobs[killed][0]))
    restart_as(c, "c-2")
    # A gptq job outlasts b's 1 s grace period: it is preempted, and runs again on another replica.
    stopped = wait(lambda: running_on(via_a, "b-1", ["gptq"]), "a gptq job running on replica b-1")
    check(b.stop() == 0, "SIGTERM replica b-1 while it ran %s (%s): it exits 0" % (stopped, jobs[stopped][0]))
    done_before = sum(1 for j in listed(via_a) if j["state"] == "SUCCEEDED")
    wait(lambda: any(j["state"] == "RUNNING" for j in listed(via_a)), "a running job")
    pg.restart()
    print("PostgreSQL restarted with %d of 12 jobs done" % done_before)

    print("submitted at %.1f s" % (submitted - started))
    final = {n: via_a.wait_for(n, lambda j: j["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"), timeout=600)
             for n in jobs}
    elapsed = time.time() - submitted
    for name, job in final.items():
        check(job["state"] == "SUCCEEDED", "%s (%s) SUCCEEDED: %s" % (name, jobs[name][0], json.dumps(job.get("error", {}))[:300]))
    watched = [json.loads(line) for line in watcher.stdout if line.strip()]
    check(watcher.wait(timeout=60) == 0 and watched and watched[-1].get("state") == "SUCCEEDED",
          "the watch through replica a-1 saw %s, submitted through c-1, to SUCCEEDED (%d updates)" % (last, len(watched)))
    print("checks begin at %.1f s" % (time.time() - started))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:  # the downloads from moto dominate the checks
        differences = dict(zip(jobs, pool.map(lambda job: same_as_reference(*job), jobs.values())))
    for name, differing in differences.items():
        check(not differing, "%s: output byte-identical to the single-node run%s" % (name, " (differ: %s)" % differing if differing else ""))

    # No job completed twice.
    held = records()
    takeovers = {n: r for n, r in held.items() if int(r.get("attempts", 0)) > 1}
    for name in jobs:
        r = held[name.split("/")[1]]
        check(r["job"]["state"] == "SUCCEEDED", "%s: its record says SUCCEEDED" % name)
    logs = "".join(s.logs() for s in (a, b, c))
    versions = bucket.list_object_versions(Bucket="models", Prefix="out/").get("Versions", [])
    for name, (_, destination) in jobs.items():
        ends = logs.count("lowbitd: %s SUCCEEDED" % name)
        report_key = destination[len("s3://models/"):] + "/lowbit_report.json"
        reports = sum(1 for v in versions if v["Key"] == report_key)
        check(ends == 1 and reports == 1, "%s completed once: %d end logged, %d report written" % (name, ends, reports))
    check(killed.split("/")[1] in takeovers, "the SIGKILLed replica's job was taken over: %s" %
          held[killed.split("/")[1]].get("lastInterruption"))
    check(stopped.split("/")[1] in takeovers, "the SIGTERMed replica's job ran again elsewhere: %s" %
          held[stopped.split("/")[1]].get("lastInterruption"))
    def metric(server, name):
        text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
        return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " ") or l.startswith(name + "{"))
    taken = sum(metric(server, "lowbit_jobs_taken_over_total") for server in (a, c))
    check(taken >= 1 and all(metric(server, "lowbit_job_store_up") == 1 for server in (a, c)),
          "/metrics: %d job(s) taken over, the job store up on both replicas" % taken)
    leftovers = [o["Key"] for o in bucket.list_objects_v2(Bucket="models").get("Contents", []) if "/.lowbit-" in o["Key"]]
    check(not leftovers, "no staging or lock remains in S3: %s" % leftovers[:5])
    ran_on = {}
    for job in final.values():
        ran_on[job.get("replica")] = ran_on.get(job.get("replica"), 0) + 1
    print("fleet takeover: 12 jobs, 1 SIGKILL, 1 SIGTERM, 1 PostgreSQL restart, %d takeovers, %.1f s; finished on %s" %
          (len(takeovers), elapsed, json.dumps(ran_on, sort_keys=True)))
    # A job no replica could fit is refused at submit, naming the largest budget.
    code, _, err = via_a.run("submit", "--input", "s3://models/" + CONFIGS["gptq"][1], "--output", "s3://models/out/huge",
                             *remote_flags("gptq")[:-4], "--calib-samples", "4096", "--calib-seqlen", "8192",
                             *remote_flags("gptq")[-4:])
    check(code != 0 and "RESOURCE_EXHAUSTED" in err and "largest budget of a live replica" in err,
          "a job larger than every replica's budget is refused at submit: %s" % err.strip()[-160:])

    # A cancel through one replica reaches the replica running the job.
    long_job = via_a.submit("--input", "s3://models/" + CONFIGS["gptq"][1], "--output", "s3://models/out/cancelled",
                            *remote_flags("gptq")[:-4], "--calib-samples", "512", *remote_flags("gptq")[-4:])
    running = via_a.wait_for(long_job, lambda j: j["state"] == "RUNNING" and int(j.get("phaseDone", 0)) >= 1)
    other = via_c if running["replica"] == "a-1" else via_a
    asked = time.time()
    code, _, err = other.run("cancel", long_job)
    check(code == 0, "cancel through the replica not running it: %s" % err.strip()[-200:])
    cancelled = other.wait_for(long_job, lambda j: j["state"] in ("CANCELLED", "SUCCEEDED", "FAILED"))
    cancel_seconds = time.time() - asked
    check(cancelled["state"] == "CANCELLED" and cancel_seconds < 3,
          "the job running on %s was CANCELLED %.2f s after the cancel reached the other replica" % (running["replica"], cancel_seconds))
    # A queued job is cancelled at once even while every replica is busy.
    def long_job(destination):
        return via_a.submit("--input", "s3://models/" + CONFIGS["gptq"][1], "--output", destination,
                            *remote_flags("gptq")[:-4], "--calib-samples", "512", *remote_flags("gptq")[-4:])
    busy = [long_job("s3://models/out/busy-%d" % i) for i in range(2)]
    for name in busy:
        via_a.wait_for(name, lambda j: j["state"] == "RUNNING")
    queued = long_job("s3://models/out/queued")
    check(via_a.job(queued)["state"] == "QUEUED", "with both replicas busy a third job waits")
    asked = time.time()
    check(via_c.run("cancel", queued)[0] == 0, "cancel the queued job")
    via_a.wait_for(queued, lambda j: j["state"] == "CANCELLED", timeout=10)
    queued_cancel_seconds = time.time() - asked
    check(all(via_a.job(n)["state"] == "RUNNING" for n in busy),
          "the queued job was CANCELLED %.2f s later, while both replicas still ran theirs" % queued_cancel_seconds)
    for name in busy:
        via_c.run("cancel", name)
    for name in busy:
        check(via_a.wait_for(name, lambda j: j["state"] in ("CANCELLED", "SUCCEEDED", "FAILED"))["state"] == "CANCELLED",
              "%s cancelled" % name)
    print("checks end at %.1f s" % (time.time() - started))
    for server in (a, c):
        check(server.stop() == 0, "replica exits 0 on SIGTERM")
    print("replicas stopped at %.1f s; cancel across replicas took %.2f s" % (time.time() - started, cancel_seconds))


def outage():
    a, b = replica("a-1", 20), replica("b-1", 20)
    a.start()
    via_a = CliClient(LOWBIT, a)
    job = via_a.submit("--input", "s3://models/" + CONFIGS["gptq"][1], "--output", "s3://models/out/outage",
                       *remote_flags("gptq"))
    via_a.wait_for(job, lambda j: j["state"] == "RUNNING" and int(j.get("phaseDone", 0)) >= 1)
    pg.stop()
    code, _, err = via_a.run("submit", "--input", "s3://models/synth", "--output", "s3://models/out/refused", "--json")
    check(code != 0 and "UNAVAILABLE" in err, "a submit while PostgreSQL is down fails UNAVAILABLE: %s" % err.strip()[:200])
    done = via_a.wait_for(job, lambda j: j["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"), timeout=300)
    check(done["state"] == "SUCCEEDED", "the running job finished while PostgreSQL was down")
    check(not same_as_reference("gptq", "s3://models/out/outage"), "and committed its output, byte-identical")
    listed = [o["Key"] for o in bucket.list_objects_v2(Bucket="models", Prefix="out/refused").get("Contents", [])]
    check(not listed, "the refused submit left nothing in the destination")
    pg.start()
    wait(lambda: records().get(job.split("/")[1], {}).get("job", {}).get("state") == "SUCCEEDED",
         "the record saved once PostgreSQL is back", timeout=60)
    check(True, "once PostgreSQL is back its record says SUCCEEDED")
    b.start()
    check(CliClient(LOWBIT, b).job(job)["state"] == "SUCCEEDED", "a replica started afterwards sees it SUCCEEDED")
    again = via_a.submit("--input", "s3://models/synth", "--output", "s3://models/out/after", "--bits", "4")
    check(via_a.wait_for(again, lambda j: j["state"] in ("SUCCEEDED", "FAILED"))["state"] == "SUCCEEDED",
          "submits work again")
    print("fleet outage: %.1f s" % (time.time() - started))
    for server in (a, b):
        check(server.stop() == 0, "replica exits 0 on SIGTERM")


try:
    {"takeover": takeover, "outage": outage}[SCENARIO]()
finally:
    pg.close()
    s3.stop()
print("fleet %s e2e: all checks passed" % SCENARIO)
