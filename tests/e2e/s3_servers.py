"""Real S3 servers on loopback for tests (moto_server and s3rver), and a fault-injecting proxy."""
import http.client
import os
import random
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
import http.server

import boto3
from botocore.config import Config


# moto accepts any credentials, so its secret is distinctive and tests search output for it; s3rver only
# knows its built-in account.
CREDENTIALS = {"moto": ("AKIALOWBITTEST", "lowbit-test-secret-must-never-be-printed"), "s3rver": ("S3RVER", "S3RVER")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, what):
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited early" % what)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("%s did not start" % what)


class S3Server:
    """kind: "moto" (moto_server, in memory) or "s3rver" (npm s3rver, on disk)."""

    def __init__(self, kind, node_modules):
        self.kind = kind
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="s3-%s-" % kind)
        if kind == "moto":
            cmd = ["moto_server", "-H", "127.0.0.1", "-p", str(self.port)]
        else:
            cmd = ["node", os.path.join(node_modules, "s3rver/bin/s3rver.js"), "--address", "127.0.0.1",
                   "--port", str(self.port), "--directory", self.dir, "--silent"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, kind)
        self.endpoint = "http://127.0.0.1:%d" % self.port
        self.access_key, self.secret_key = CREDENTIALS[kind]

    def client(self, endpoint=None):
        # s3rver accepts only its own example credentials; moto accepts any.
        return boto3.client("s3", endpoint_url=endpoint or self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


class FaultProxy:
    """An HTTP proxy in front of an S3 server that answers a share of requests with 500, 503 SlowDown,
    a connection reset or a delay (then forwards), or `forbidden` with 403 AccessDenied."""

    def __init__(self, upstream_port, rate=0.0, seed=1):
        self.upstream_port = upstream_port
        self.rate = rate
        self.kinds = ["500", "503", "reset", "delay"]  # delays forward the request after 0.3 s
        self.forbidden = False
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.requests = 0
        self.paths = []  # (method, path) of every request, for checking what the client really sent
        self.signed = []  # (access key id or None, x-amz-security-token or None) of every request
        self.sts_answers = []  # the bodies STS answered AssumeRoleWithWebIdentity with
        self.faults = {"500": 0, "503": 0, "reset": 0, "delay": 0, "403": 0}
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def handle_any(self):
                try:
                    self.relay()
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up first; nothing to report

            def relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with proxy.lock:
                    proxy.requests += 1
                    proxy.paths.append((self.command, self.path))
                    auth = self.headers.get("Authorization") or ""
                    key = auth.split("Credential=", 1)[1].split("/", 1)[0] if "Credential=" in auth else None
                    proxy.signed.append((key, self.headers.get("x-amz-security-token")))
                    fault = None
                    if proxy.forbidden:
                        fault = "403"
                    elif proxy.rng.random() < proxy.rate:
                        fault = proxy.rng.choice(proxy.kinds)
                    if fault:
                        proxy.faults[fault] += 1
                if fault in ("500", "503", "403"):
                    code, err = {"500": (500, "InternalError"), "503": (503, "SlowDown"), "403": (403, "AccessDenied")}[fault]
                    payload = ("<Error><Code>%s</Code><Message>injected</Message></Error>" % err).encode()
                    self.send_response(code)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                if fault == "delay":
                    time.sleep(0.3)
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                headers = {k: v for k, v in self.headers.items()}
                conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None,
                             headers=headers)
                r = conn.getresponse()
                data = r.read()
                if b"Action=AssumeRoleWithWebIdentity" in body:
                    with proxy.lock:
                        proxy.sts_answers.append(data.decode())
                self.send_response(r.status)
                for k, v in r.getheaders():
                    # HEAD answers carry the object's length with no body: pass it through unchanged.
                    if k.lower() not in ("transfer-encoding", "connection") and (k.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
