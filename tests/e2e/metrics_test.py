"""The /metrics endpoint: valid for promtool, and scraped by a real Prometheus server that then answers
a query for the finished-jobs counter. Usage: metrics_test.py LOWBITD LOWBIT SHARED_DATA"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from lowbitd import Lowbitd

LOWBITD, LOWBIT, SHARED = sys.argv[1:4]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


with Lowbitd(LOWBITD, SHARED) as server:
    done = subprocess.run([LOWBIT, "submit", "--server", server.address, "--input", "stories260K.bin",
                           "--output", "out/metrics", "--bits", "4", "--group-size", "32", "--watch"],
                          capture_output=True, text=True)
    check(done.returncode == 0, "a job ran through the server: " + done.stdout.splitlines()[-1] if done.stdout else done.stderr)
    failed = subprocess.run([LOWBIT, "submit", "--server", server.address, "--input", "stories260K.bin",
                             "--output", "out/metrics", "--watch"], capture_output=True, text=True)
    check(failed.returncode != 0, "a rejected submission exits non-zero")

    # Slow clients (connected, sending nothing) do not hold up a scrape.
    import socket
    slow = [socket.create_connection(("127.0.0.1", server.metrics_port)) for _ in range(4)]
    began = time.time()
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    waited = time.time() - began
    check(waited < 1.0, "a scrape beside 4 silent connections took %.3f s" % waited)
    for sock in slow:
        sock.close()
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    check(lint.returncode == 0, "promtool check metrics: clean " + lint.stdout + lint.stderr)
    for name in ["lowbit_jobs_submitted_total", "lowbit_jobs_finished_total", "lowbit_jobs_running", "lowbit_jobs_queued",
                 "lowbit_job_duration_seconds_bucket", "lowbit_layers_quantized_total", "lowbit_layer_quantize_seconds_bucket",
                 "lowbit_layer_relative_error_bucket", "lowbit_bytes_read_total", "lowbit_bytes_written_total"]:
        check(("\n" + name) in text, "exposes " + name)
    check('lowbit_layers_quantized_total{method="rtn"} 20' in text, "20 rtn layers counted (the 172-wide MLP stays FP16)")
    check("job=" not in text and "layer=" not in text, "no job or layer labels")

    # A real Prometheus server scrapes the endpoint and answers a query.
    work = tempfile.mkdtemp(prefix="prometheus-")
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: lowbitd\n"
                "    static_configs:\n      - targets: ['127.0.0.1:%d']\n" % server.metrics_port)
    web_port = free_port()
    prom = subprocess.Popen(["prometheus", "--config.file=" + config, "--storage.tsdb.path=" + os.path.join(work, "data"),
                             "--web.listen-address=127.0.0.1:%d" % web_port],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = urllib.parse.quote('lowbit_jobs_finished_total{state="succeeded"}')
        value = None
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                r = json.load(urllib.request.urlopen("http://127.0.0.1:%d/api/v1/query?query=%s" % (web_port, query)))
                if r["data"]["result"]:
                    value = float(r["data"]["result"][0]["value"][1])
                    break
            except OSError:
                pass
            time.sleep(0.5)
        check(value == 1.0, "Prometheus scraped lowbitd: lowbit_jobs_finished_total{state=\"succeeded\"} = %s" % value)
    finally:
        prom.terminate()
        prom.wait()
    check(server.stop() == 0, "lowbitd exits 0 on SIGTERM")
print("metrics e2e: all checks passed")
