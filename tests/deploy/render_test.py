"""The Kubernetes manifests as kustomize renders them (`kubectl kustomize`, no API server), checked for what a
platform team requires: restricted pod security, gRPC probes, a grace period that covers --grace_period,
memory limits above --memory_limit, a PodDisruptionBudget and a NetworkPolicy, IRSA, the replicated
overlay's PostgreSQL job store, the batch Job's failure policy on lowbit's exit codes, and the
PrometheusRule equal to deploy/prometheus/alerts.yaml.
Usage: render_test.py REPO"""
import re
import subprocess
import sys

import yaml

REPO = sys.argv[1]


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


def render(path):
    out = subprocess.run(["kubectl", "kustomize", "%s/deploy/%s" % (REPO, path)], check=True, capture_output=True,
                         text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def one(docs, kind):
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, "%d %s" % (len(found), kind)
    return found[0]


def byte_size(text):
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|K|M|G|KiB|MiB|GiB)?", text)
    scale = {None: 1, "K": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "KiB": 2**10,
             "MiB": 2**20, "GiB": 2**30}[m.group(2)]
    return int(m.group(1)) * scale


def flag(args, name):
    values = [a.split("=", 1)[1] for a in args if a.startswith("--%s=" % name)]
    return values[-1] if values else None


def check_restricted(pod, where):
    sc = pod["securityContext"]
    check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0 and
          sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "%s: non-root pod with seccomp RuntimeDefault" % where)
    for c in pod["containers"]:
        csc = c["securityContext"]
        check(csc.get("allowPrivilegeEscalation") is False and csc.get("readOnlyRootFilesystem") is True and
              csc.get("capabilities", {}).get("drop") == ["ALL"],
              "%s/%s: no privilege escalation, read-only root, all capabilities dropped" % (where, c["name"]))
        limit = byte_size(c["resources"]["limits"]["memory"])
        planned = byte_size(flag(c.get("args", []), "memory_limit") or flag(c.get("args", []), "memory-limit"))
        check(limit >= 1.25 * planned, "%s/%s: memory limit %s is at least --memory_limit + 25%%" % (where, c["name"], c["resources"]["limits"]["memory"]))


def parse_seconds(d):
    return int(re.fullmatch(r"(\d+)s", d).group(1))


for overlay in ("single-node", "replicated"):
    docs = render("overlays/" + overlay)
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    where = overlay
    check_restricted(pod, where)
    container = pod["containers"][0]
    args = container["args"]
    check(container["readinessProbe"].get("grpc", {}).get("port") == 50052 and
          container["livenessProbe"].get("grpc", {}).get("port") == 50052 and flag(args, "health_address").endswith(":50052"),
          "%s: gRPC probes on the plaintext health port" % where)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    check(pod["terminationGracePeriodSeconds"] >= pre_stop + parse_seconds(flag(args, "grace_period")) + 10,
          "%s: terminationGracePeriodSeconds %d covers preStop %ds + --grace_period %s" % (
              where, pod["terminationGracePeriodSeconds"], pre_stop, flag(args, "grace_period")))
    sa = one(docs, "ServiceAccount")
    check(pod["serviceAccountName"] == sa["metadata"]["name"] and
          sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::"),
          "%s: the ServiceAccount is annotated for IRSA" % where)
    check(any(e.get("secretRef", {}).get("name") == "lowbit-aws" and e["secretRef"].get("optional") for e in container["envFrom"]),
          "%s: AWS keys from an optional Secret otherwise" % where)
    selector = deployment["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget")
    check(pdb["spec"]["selector"]["matchLabels"] == selector, "%s: a PodDisruptionBudget selects the pods" % where)
    policy = one(docs, "NetworkPolicy")
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule.get("ports", [])}
    check(policy["spec"]["podSelector"]["matchLabels"] == selector and {50051, 9464} <= ingress_ports and
          set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}, "%s: a NetworkPolicy limits traffic both ways" % where)
    if overlay == "single-node":
        check(deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate" and
              flag(args, "state_dir") and one(docs, "PersistentVolumeClaim"), "single-node: one replica on a volume")
    else:
        env = {e["name"]: e for e in container["env"]}
        check(deployment["spec"]["replicas"] >= 2 and flag(args, "job_store") == "$(LOWBIT_JOB_STORE)" and
              env["LOWBIT_JOB_STORE"]["valueFrom"]["secretKeyRef"]["name"] == "lowbit-postgres" and
              not [d for d in docs if d["kind"] == "PersistentVolumeClaim"],
              "replicated: %d replicas on PostgreSQL from a Secret, no volume" % deployment["spec"]["replicas"])

job = one(render("batch"), "Job")
pod = job["spec"]["template"]["spec"]
check_restricted(pod, "batch")
container = pod["containers"][0]
rules = job["spec"]["podFailurePolicy"]["rules"]
fail = [r for r in rules if r["action"] == "FailJob"][0]["onExitCodes"]
# The permanent codes as client/exit_code.h's table gives them.
table = open("%s/client/exit_code.h" % REPO).read()
permanent = {int(m.group(1)) for m in re.finditer(r"^//\s+(\d+)\s+(permanent|the command line)", table, re.M)}
check(pod["restartPolicy"] == "Never" and fail["containerName"] == container["name"] and set(fail["values"]) == permanent,
      "batch: the permanent exit codes %s of client/exit_code.h fail the Job; the others are retried" % sorted(permanent))
check(container["command"] == ["/usr/local/bin/lowbit"] and container["args"][0] == "quantize" and
      flag(container["args"], "run-id") == "$(JOB_NAME)" and "--progress-json" in container["args"],
      "batch: lowbit quantize, resumable by the Job's name, JSON progress")

monitoring = render("monitoring")
rule = one(monitoring, "PrometheusRule")
alerts = yaml.safe_load(open("%s/deploy/prometheus/alerts.yaml" % REPO))
check(rule["spec"] == alerts, "the PrometheusRule holds deploy/prometheus/alerts.yaml's rules")
monitor = one(monitoring, "ServiceMonitor")
check(monitor["spec"]["endpoints"][0]["port"] == "metrics" and monitor["spec"]["endpoints"][0]["scheme"] == "https",
      "the ServiceMonitor scrapes the metrics port over TLS")
print("deploy render: all checks passed")
