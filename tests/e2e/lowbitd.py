"""Runs lowbitd for a test: a temporary object-store root seeded with stories260K, free ports, clean stop."""
import os
import shutil
import signal
import subprocess
import tempfile
import time


class Lowbitd:
    def __init__(self, binary, shared_data, extra_args=()):
        self.binary = binary
        self.shared_data = shared_data
        self.extra_args = list(extra_args)
        self.dir = tempfile.mkdtemp(prefix="lowbitd-test-")
        self.store = os.path.join(self.dir, "store")
        os.makedirs(self.store)
        shutil.copy(os.path.join(shared_data, "models/stories260K/stories260K.bin"), self.store)
        shutil.copy(os.path.join(shared_data, "models/stories260K/tok512.bin"), self.store)
        shutil.copy(os.path.join(shared_data, "text/tiny-shakespeare.txt"), self.store)
        self.proc = None

    def start(self):
        assert self.proc is None, "lowbitd is already running"
        ready = os.path.join(self.dir, "ready")
        if os.path.exists(ready):
            os.remove(ready)
        self.log = open(os.path.join(self.dir, "lowbitd.log"), "a")
        self.proc = subprocess.Popen(
            [self.binary, "--grpc_address=127.0.0.1:0", "--metrics_address=127.0.0.1:0",
             "--store_root=" + self.store, "--state_dir=" + os.path.join(self.dir, "state"),
             "--ready_file=" + ready, "--grace_period=5s"] + self.extra_args,
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while not os.path.exists(ready):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("lowbitd did not start:\n" + self.logs())
            time.sleep(0.05)
        grpc_port, metrics_port = open(ready).read().split()
        self.address = "127.0.0.1:" + grpc_port
        self.metrics_url = "http://127.0.0.1:%s/metrics" % metrics_port
        self.metrics_port = int(metrics_port)
        return self

    def stop(self, timeout=30):
        """SIGTERM, as Kubernetes does; returns the exit status."""
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        self.log.close()
        return code

    def logs(self):
        try:
            return open(os.path.join(self.dir, "lowbitd.log")).read()
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
