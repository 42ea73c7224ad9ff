"""`make quality-table`: the README's quality table from real runs on stories260K. Calibration on
tiny-shakespeare (32 windows of 128 tokens) for the methods that use it, evaluation on WikiText-2 test
(16 windows of 128 tokens): perplexity and mean KL to the FP32 model. Every model is written in lowbit's
native layout, which holds stories260K's 172-wide MLP (the GPTQ and AWQ layouts keep it in FP16, as engines
cannot load that shape), so each row quantizes all 35 linear layers. Usage: quality_table.py BUILD_DIR"""
import json
import os
import subprocess
import sys
import tempfile

build = sys.argv[1]
data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
model = os.path.join(data, "models/stories260K/stories260K.bin")
common = ["--tokenizer", os.path.join(data, "models/stories260K/tok512.bin"),
          "--eval-text", os.path.join(data, "text/wikitext2-test.raw"), "--json", "--overwrite", "--format", "native"]
calib = ["--calib", os.path.join(data, "text/tiny-shakespeare.txt"), "--calib-samples", "32", "--calib-seqlen", "128"]
grouped = ["--granularity", "per_grouped_channel", "--group-size", "16"]
runs = []  # (label, settings, args, calibrated)
# Zero-point grids unless the row says symmetric (GPTQ's default, what vLLM's Marlin kernels take).
for bits in (4, 3):
    for method in ("rtn", "gptq", "awq"):
        runs.append((method.upper(), "%d-bit g32" % bits,
                     ["--method", method, "--bits", str(bits), "--group-size", "32", "--nosym"], method != "rtn"))
    for method in ("rtn", "gptq"):
        runs.append((method.upper(), "%d-bit g32 symmetric" % bits,
                     ["--method", method, "--bits", str(bits), "--group-size", "32", "--sym"], method != "rtn"))
for bits, group in ((4, -1), (2, 32)):
    for method in ("rtn", "gptq"):
        runs.append((method.upper(), "%d-bit %s" % (bits, "per-channel" if group == -1 else "g%d" % group),
                     ["--method", method, "--bits", str(bits), "--group-size", str(group), "--nosym"], method != "rtn"))
for bits in (4, 3, 2):
    for granularity, extra in (("per tensor", []), ("16 channels/LUT", grouped)):
        for sensitive in (False, True):
            runs.append(("LUT", "%d-bit %s%s" % (bits, granularity, ", sensitive" if sensitive else ""),
                         ["--method", "lut", "--bits", str(bits)] + extra, sensitive))
for bits in (2, 3):
    runs.append(("VQ", "d=2, %d bits/dim" % bits, ["--method", "vq", "--dim", "2", "--bits", str(bits)], True))
runs.append(("OneBit", "nmf", ["--method", "onebit"], False))
runs.append(("OneBit", "nmf + 4 refinement rounds", ["--method", "onebit", "--refine-iterations", "4"], True))

rows = []
with tempfile.TemporaryDirectory() as work:
    for label, settings, args, calibrated in runs:
        out = subprocess.run([os.path.join(build, "lowbit"), "quantize", "--input", model, "--output",
                              os.path.join(work, "q")] + args + common + (calib if calibrated else []),
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out)
        e = r["evaluation"]
        rows.append((label, settings, r["summary"]["bits_per_weight"], e["perplexity"], e["kl_divergence"],
                     r["summary"]["mean_relative_error"], r["summary"]["seconds"]))
        fp32 = e["reference_perplexity"]
        print("%s %s done" % (label, settings), file=sys.stderr)
print("| method | settings | bits/weight | perplexity | KL to FP32 (nats/token) | mean weight rel. error | job seconds |")
print("|---|---|---|---|---|---|---|")
print("| FP32 | - | 32 | %.2f | 0 | 0 | - |" % fp32)
for label, settings, bpw, ppl, kl, err, sec in rows:
    print("| %s | %s | %.3f | %.2f | %.4f | %.4f | %.2f |" % (label, settings, bpw, ppl, kl, err, sec))
