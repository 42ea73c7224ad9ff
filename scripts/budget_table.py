"""`make budget-table`: the README's bit-budget table from real runs on stories260K. `lowbit plan` measures
the default native candidates once (calibration: tiny-shakespeare, 32 windows of 128 tokens); a budget job
at each of 3, 3.5, 4, 4.5, 5 and 6 bits per linear weight reuses that measurement; every uniform setting
(each candidate, and AWQ, as an ordinary one-setting job) is run too. All are evaluated on WikiText-2 test
(16 windows of 128 tokens): mean KL to the FP32 model. Usage: budget_table.py BUILD_DIR"""
import json
import os
import subprocess
import sys
import tempfile

build = sys.argv[1]
lowbit = os.path.join(build, "lowbit")
data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
model = ["--input", os.path.join(data, "models/stories260K/stories260K.bin"),
         "--tokenizer", os.path.join(data, "models/stories260K/tok512.bin")]
calib = ["--calib", os.path.join(data, "text/tiny-shakespeare.txt"), "--calib-samples", "32", "--calib-seqlen", "128"]
evaluation = ["--eval-text", os.path.join(data, "text/wikitext2-test.raw"), "--eval-windows", "16", "--eval-seqlen", "128"]
budgets = (3.0, 3.5, 4.0, 4.5, 5.0, 6.0)


def run(*args):
    return json.loads(subprocess.run([lowbit, *args], capture_output=True, text=True, check=True).stdout)


def uniform_flags(setting):
    """The one-setting job of a candidate name (core/job/bit_budget.h's grammar)."""
    parts = setting.split("-")
    bits = parts[1][:-1]
    if parts[0] == "vq":
        return ["--method", "vq", "--bits", bits, "--dim", parts[2][1:]]
    if parts[0] == "lut":
        return ["--method", "lut", "--bits", bits, "--granularity", "per_grouped_channel", "--group-size", parts[2][1:]]
    group = "-1" if parts[2] == "ch" else parts[2][1:]
    return ["--method", parts[0], "--bits", bits, "--group-size", group, "--nosym"]


with tempfile.TemporaryDirectory() as work:
    measurement = os.path.join(work, "measurement.json")
    plan = run("plan", *model, *calib, "--json", "--save-measurement", measurement,
               "--budgets", ",".join("%g" % b for b in budgets))
    print("measured %d layers x %d candidates in %.1f s" % (plan["layers"], len(plan["candidates"]), plan["measurement_seconds"]),
          file=sys.stderr)
    allocated = {}
    for b in budgets:
        r = run("quantize", *model, *calib, *evaluation, "--target-bpw", "%g" % b, "--measurement", measurement,
                "--output", os.path.join(work, "b"), "--overwrite", "--json")
        allocated[b] = (r["summary"]["bits_per_weight"], r["allocation"]["predicted_kl"], r["evaluation"]["kl_divergence"])
        print("budget %g done" % b, file=sys.stderr)
    uniform = []  # (label, bits per weight, measured KL)
    settings = [(c, uniform_flags(c)) for c in plan["candidates"]]
    settings += [("awq-%db-%s" % (bits, g), ["--method", "awq", "--bits", str(bits), "--group-size", "-1" if g == "ch" else g[1:],
                                               "--nosym"]) for bits in (3, 4, 5, 6, 8) for g in ("g32", "ch")]
    for label, flags in settings:
        r = run("quantize", *model, *calib, *evaluation, *flags, "--format", "native", "--output", os.path.join(work, "u"),
                "--overwrite", "--json")
        uniform.append((label, r["summary"]["bits_per_weight"], r["evaluation"]["kl_divergence"]))
        print("uniform %s done" % label, file=sys.stderr)

print("| budget (bits/weight) | allocated: bits/weight | predicted KL | measured KL | prediction error | best uniform within the budget | its bits/weight | its KL | KL reduction |")
print("|---|---|---|---|---|---|---|---|---|")
for b in budgets:
    bpw, predicted, measured = allocated[b]
    fits = [u for u in uniform if u[1] <= b]
    best = min(fits, key=lambda u: u[2]) if fits else None
    print("| %g | %.3f | %.4f | %.4f | %+.0f%% | %s | %s | %s | %s |" % (
        b, bpw, predicted, measured, 100 * (predicted - measured) / measured,
        best[0] if best else "none fits", "%.3f" % best[1] if best else "-", "%.4f" % best[2] if best else "-",
        "%.0f%%" % (100 * (1 - measured / best[2])) if best else "-"))
