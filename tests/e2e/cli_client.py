"""The lowbit CLI against a running lowbitd, for end-to-end tests: submit, get, wait, with JSON output."""
import json
import subprocess
import time


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


class CliClient:
    def __init__(self, lowbit, server):
        self.lowbit = lowbit
        self.server = server  # a Lowbitd; its address may change across restarts

    def run(self, *args):
        r = subprocess.run([self.lowbit, *args, "--server", self.server.address], capture_output=True, text=True)
        return r.returncode, r.stdout, r.stderr

    def submit(self, *args):
        code, out, err = self.run("submit", *args, "--json")
        if code != 0:
            raise AssertionError("submit failed: " + err)
        return json.loads(out)["metadata"]["name"]

    def job(self, name):
        code, out, err = self.run("get", name, "--json")
        assert code == 0, err
        try:
            return json.loads(out)
        except ValueError:
            raise AssertionError("lowbit get --json printed invalid JSON:\n" + out)

    def wait_for(self, name, predicate, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            j = self.job(name)
            if predicate(j):
                return j
            time.sleep(0.05)
        raise AssertionError("timed out waiting on %s: %s" % (name, json.dumps(self.job(name))[:2000]))
