"""lowbitd behind mutual TLS and bearer credentials, called by Debian's python3-grpcio.

Certificates come from the openssl CLI, JWTs are signed with python3-cryptography: nothing here shares
code with the server; the lowbit CLI is checked as a client too. Usage: auth_test.py LOWBITD SHARED_DATA LOWBIT"""
import base64
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from lowbitd import Lowbitd

LOWBITD, SHARED, LOWBIT = sys.argv[1:4]
work = tempfile.mkdtemp(prefix="lowbit-auth-")
failures = []


def check(ok, what):
    print(("ok: " if ok else "FAIL: ") + what)
    if not ok:
        failures.append(what)


def path(name):
    return os.path.join(work, name)


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_ca(name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=" + name,
            "-keyout", path(name + ".key"), "-out", path(name + ".pem"))


def make_cert(name, ca, san=None):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name, "-keyout", path(name + ".key"),
            "-out", path(name + ".csr"))
    ext = path(name + ".ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=%s\n" % (san or "DNS:" + name))
    openssl("x509", "-req", "-in", path(name + ".csr"), "-CA", path(ca + ".pem"), "-CAkey", path(ca + ".key"),
            "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", path(name + ".pem"))


make_ca("ca")
make_ca("other-ca")
make_cert("server", "ca", "IP:127.0.0.1,DNS:localhost")
make_cert("client", "ca")
make_cert("stranger", "other-ca")
with open(path("tokens"), "w") as f:
    f.write("# one per line\ntok-right\n")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_int(n, size):
    return b64url(n.to_bytes(size, "big"))


rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_key = ec.generate_private_key(ec.SECP256R1())
rsa_pub, ec_pub = rsa_key.public_key().public_numbers(), ec_key.public_key().public_numbers()
with open(path("jwks.json"), "w") as f:
    json.dump({"keys": [
        {"kty": "RSA", "kid": "r1", "n": b64url_int(rsa_pub.n, 256), "e": b64url_int(rsa_pub.e, 3)},
        {"kty": "EC", "kid": "e1", "crv": "P-256", "x": b64url_int(ec_pub.x, 32), "y": b64url_int(ec_pub.y, 32)},
    ]}, f)


def jwt(alg="RS256", kid="r1", exp_in=300, aud="lowbit", tamper=False):
    header = b64url(json.dumps({"alg": alg, "kid": kid, "typ": "JWT"}).encode())
    claims = {"sub": "ci", "aud": aud, "iss": "https://issuer.test", "exp": int(time.time()) + exp_in}
    payload = b64url(json.dumps(claims).encode())
    signed = (header + "." + payload).encode()
    if alg == "RS256":
        signature = rsa_key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "ES256":
        r, s = decode_dss_signature(ec_key.sign(signed, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        signature = b""
    if tamper:
        payload = b64url(json.dumps(dict(claims, sub="root")).encode())
    return header + "." + payload + "." + b64url(signature)


def read(name):
    with open(path(name), "rb") as f:
        return f.read()


def channel(cert="client"):
    creds = grpc.ssl_channel_credentials(
        root_certificates=read("ca.pem"),
        private_key=read(cert + ".key") if cert else None,
        certificate_chain=read(cert + ".pem") if cert else None)
    return grpc.secure_channel(server.address, creds)


def call(ch, method, token=None):
    """The status code of an RPC with an empty request (valid for both methods used)."""
    stub = ch.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    metadata = [("authorization", "Bearer " + token)] if token else None
    try:
        stub(b"", metadata=metadata, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


probe_port = free_port()
LIST = "/lowbit.v1.Quantizer/ListJobs"
HEALTH = "/grpc.health.v1.Health/Check"

server = Lowbitd(LOWBITD, SHARED, [
    "--tls_cert=" + path("server.pem"), "--tls_key=" + path("server.key"), "--tls_client_ca=" + path("ca.pem"),
    "--auth_token_file=" + path("tokens"), "--auth_jwks=" + path("jwks.json"),
    "--auth_issuer=https://issuer.test", "--auth_audience=lowbit", "--health_address=127.0.0.1:%d" % probe_port])
with server:
    ch = channel()
    check(call(ch, HEALTH) == grpc.StatusCode.OK, "health answers without a token (for probes)")
    check(call(ch, LIST) == grpc.StatusCode.UNAUTHENTICATED, "no token: UNAUTHENTICATED")
    check(call(ch, LIST, "tok-wrong") == grpc.StatusCode.UNAUTHENTICATED, "a wrong token: UNAUTHENTICATED")
    check(call(ch, LIST, "tok-right") == grpc.StatusCode.OK, "the right token over mutual TLS: OK")
    check(call(ch, "/google.longrunning.Operations/ListOperations") == grpc.StatusCode.UNAUTHENTICATED,
          "the Operations service asks for the token too")
    check(call(ch, LIST, jwt()) == grpc.StatusCode.OK, "a JWT signed RS256 by a JWKS key: OK")
    check(call(ch, LIST, jwt("ES256", "e1")) == grpc.StatusCode.OK, "a JWT signed ES256 by a JWKS key: OK")
    for name, token in [("expired", jwt(exp_in=-600)), ("tampered", jwt(tamper=True)),
                        ("for another audience", jwt(aud="someone-else")), ("alg none", jwt(alg="none")),
                        ("RS256 under the EC key's kid", jwt("RS256", "e1"))]:
        check(call(ch, LIST, token) == grpc.StatusCode.UNAUTHENTICATED, "a JWT %s: UNAUTHENTICATED" % name)

    stranger = call(channel("stranger"), HEALTH)
    check(stranger == grpc.StatusCode.UNAVAILABLE, "a client certificate from another CA fails the handshake (%s)" % stranger)
    anonymous = call(channel(None), HEALTH)
    check(anonymous == grpc.StatusCode.UNAVAILABLE, "no client certificate fails the handshake (%s)" % anonymous)
    probe = grpc.insecure_channel("127.0.0.1:%d" % probe_port)
    check(call(probe, HEALTH) == grpc.StatusCode.OK, "the plaintext probe port answers health (Kubernetes' grpc probe)")
    check(call(probe, LIST, "tok-right") == grpc.StatusCode.UNIMPLEMENTED, "and nothing else")
    plain = call(grpc.insecure_channel(server.address), HEALTH)
    check(plain == grpc.StatusCode.UNAVAILABLE, "plaintext to the TLS port fails (%s)" % plain)

    # The lowbit CLI as a client of the secured server.
    with open(path("cli-token"), "w") as f:
        f.write("tok-right\n")
    tls_flags = ["--server", server.address, "--tls-ca", path("ca.pem"), "--tls-cert", path("client.pem"),
                 "--tls-key", path("client.key")]
    cli = subprocess.run([LOWBIT, "list", *tls_flags, "--token-file", path("cli-token")], capture_output=True, text=True)
    check(cli.returncode == 0, "lowbit list over mutual TLS with --token-file: exit %d %s" % (cli.returncode, cli.stderr.strip()))
    cli = subprocess.run([LOWBIT, "list", *tls_flags], capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "LOWBIT_TOKEN"})
    check(cli.returncode != 0 and "UNAUTHENTICATED" in cli.stderr, "lowbit list without a token: " + cli.stderr.strip()[:120])
    cli = subprocess.run([LOWBIT, "list", *tls_flags], capture_output=True, text=True, env=dict(os.environ, LOWBIT_TOKEN="tok-right"))
    check(cli.returncode == 0, "lowbit list with $LOWBIT_TOKEN: exit %d" % cli.returncode)

    # Tokens rotate without a restart.
    with open(path("tokens"), "w") as f:
        f.write("tok-new\n")
    time.sleep(1.2)
    check(call(ch, LIST, "tok-new") == grpc.StatusCode.OK, "a token added to the file is accepted")
    check(call(ch, LIST, "tok-right") == grpc.StatusCode.UNAUTHENTICATED, "a token removed from the file is refused")

    # /metrics behind the same TLS and token.
    tls = ssl.create_default_context(cafile=path("ca.pem"))
    tls.load_cert_chain(path("client.pem"), path("client.key"))
    url = "https://127.0.0.1:%d/metrics" % server.metrics_port

    def scrape(token):
        request = urllib.request.Request(url, headers={"Authorization": "Bearer " + token} if token else {})
        try:
            with urllib.request.urlopen(request, context=tls, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, ""

    status, body = scrape("tok-new")
    check(status == 200 and "lowbit_jobs_submitted_total" in body, "/metrics over TLS with the token: %d" % status)
    check(scrape(None)[0] == 401, "/metrics without the token: 401")
    try:
        urllib.request.urlopen(url.replace("https", "http"), timeout=5)
        check(False, "/metrics refuses plain HTTP")
    except Exception as e:
        check(True, "/metrics refuses plain HTTP (%s)" % type(e).__name__)
    check(server.stop() == 0, "lowbitd exits 0")

# Without TLS or tokens the default address is loopback only.
log = path("default.log")
proc = subprocess.Popen([LOWBITD, "--metrics_address=127.0.0.1:0", "--store_root=" + work,
                         "--state_dir=" + path("state")], stdout=open(log, "w"), stderr=subprocess.STDOUT)
deadline = time.time() + 20
while "serving gRPC" not in open(log).read() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.1)
proc.terminate()
proc.wait(timeout=30)
text = open(log).read()
check("serving gRPC on 127.0.0.1:50051" in text, "an unsecured lowbitd listens on loopback by default: " +
      next((l for l in text.splitlines() if "serving" in l or "cannot" in l), text[-200:]))

if failures:
    sys.exit("auth e2e: %d check(s) failed" % len(failures))
print("auth e2e: all checks passed")
