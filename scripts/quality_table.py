"""`make quality-table`: the README's quality table from real runs on stories260K. Calibration on
tiny-shakespeare (GPTQ), evaluation on WikiText-2 test (16 windows of 128 tokens): perplexity and mean KL
to the FP32 model. Usage: quality_table.py BUILD_DIR"""
import json
import os
import subprocess
import sys
import tempfile

build = sys.argv[1]
data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
model = os.path.join(data, "models/stories260K/stories260K.bin")
common = ["--tokenizer", os.path.join(data, "models/stories260K/tok512.bin"),
          "--eval-text", os.path.join(data, "text/wikitext2-test.raw"), "--json", "--overwrite"]
calib = ["--calib", os.path.join(data, "text/tiny-shakespeare.txt"), "--calib-samples", "32", "--calib-seqlen", "128"]
rows = []
with tempfile.TemporaryDirectory() as work:
    for bits, group in [(4, 32), (3, 32), (4, -1), (2, 32)]:
        for method in ["rtn", "gptq"]:
            out = subprocess.run([os.path.join(build, "lowbit"), "quantize", "--input", model, "--output",
                                  os.path.join(work, "q"), "--method", method, "--bits", str(bits), "--group-size",
                                  str(group)] + common + (calib if method == "gptq" else []),
                                 capture_output=True, text=True, check=True).stdout
            r = json.loads(out)
            e = r["evaluation"]
            rows.append((method, bits, "per-channel" if group == -1 else "g%d" % group, r["summary"]["bits_per_weight"],
                         e["perplexity"], e["kl_divergence"], r["summary"]["mean_relative_error"], r["summary"]["seconds"]))
            fp32 = e["reference_perplexity"]
print("| method | bits | groups | bits/weight | perplexity | KL to FP32 (nats/token) | mean weight rel. error | job seconds |")
print("|---|---|---|---|---|---|---|---|")
print("| FP32 | 32 | - | 32 | %.2f | 0 | 0 | - |" % fp32)
for m, b, g, bpw, ppl, kl, err, sec in rows:
    print("| %s | %d | %s | %.3f | %.2f | %.4f | %.4f | %.2f |" % (m.upper(), b, g, bpw, ppl, kl, err, sec))
