"""`make calib-bench`: block-wise calibration at real model shapes.

GPTQ 4-bit g128 with 32 windows x 256 tokens on synthetic BF16 checkpoints with Llama-2-7B shapes (2 and 4
decoder blocks), and GPTQ + evaluation end to end on a SmolLM2-135M-shaped checkpoint (30 blocks). For each
run: wall time and peak RSS of the `lowbit quantize` process (os.wait4), and for the 7B shapes the FLOP lower
bound — two batched block passes over the calibration tokens plus the GPTQ solves — at the sgemm rate
measured in the same run. Ends with the projected time of a 32-block 7B job with 128 x 2048 tokens.
`--cancel` instead measures, through lowbitd, how long a cancel takes to stop a calibrating 7B-shaped job
when it arrives at different moments.
Usage: calib_bench.py BUILD_DIR [--lowbit OTHER_LOWBIT] [--only 7b|smollm2] [--cancel]"""
import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHARED = os.path.join(ROOT, "..", "shared", "data")
TEXT = os.path.join(SHARED, "text", "tiny-shakespeare.txt")


def write_byte_tokenizer(path, vocab):
    """A llama2.c tokenizer.bin of `vocab` pieces: <unk>, <s>, </s>, the 256 byte tokens, then filler pieces
    that no text forms; text therefore encodes byte by byte. For models whose own tokenizer is not here."""
    with open(path, "wb") as f:
        f.write(struct.pack("<i", 16))
        for i in range(vocab):
            if i < 3:
                piece = [b"<unk>", b"<s>", b"</s>"][i]
            elif i < 259:
                piece = b"<0x%02X>" % (i - 3)
            else:
                piece = b"\x01tok%d" % i
            f.write(struct.pack("<fi", 0.0, len(piece)) + piece)


def run_rss(cmd):
    """Like run, with the peak RSS from wait4 (resource usage of exactly this child)."""
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.time() - started
    if status != 0:
        raise RuntimeError("%s failed:\n%s" % (" ".join(cmd), err[-3000:]))
    return seconds, usage.ru_maxrss * 1024, out


def sgemm_gflops(build):
    out = subprocess.run([os.path.join(build, "tests", "lowbit_bench"), "--benchmark_filter=BM_Sgemm4096/",
                          "--benchmark_format=json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["benchmarks"][0]["GFLOP/s"] / 1e9


def gptq_flops(rows, cols, block=128):
    """GPTQ's arithmetic on one layer: the trailing updates (2·rows·cols²/2 summed over lazy batches, in
    sgemm), H's Cholesky/inverse/Cholesky (~cols³) and the in-batch feedback (rows·cols·block)."""
    return rows * cols * cols + cols ** 3 + rows * cols * block


def lower_bound_flops(dim, hidden, heads, kv_heads, tokens, window, blocks):
    head_dim = dim // heads
    kv = kv_heads * head_dim
    linear = 2 * dim * (dim + 2 * kv) + 2 * dim * dim + 3 * 2 * dim * hidden  # per token
    attention = 2 * 2 * window * dim / 2  # QKᵀ and PV over the causal half, per token
    passes = 2 * tokens * (linear + attention)
    hessians = tokens * (3 * dim * dim + hidden * hidden)  # ssyrk of each group's input, per token
    solves = (gptq_flops(dim, dim) * 2 + gptq_flops(kv, dim) * 2 + gptq_flops(hidden, dim) * 2 +
              gptq_flops(dim, hidden))
    return blocks * (passes + hessians + solves)


def cancel_latency(build, synth):
    sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
    from cli_client import CliClient  # noqa: E402
    from lowbitd import Lowbitd  # noqa: E402
    server = Lowbitd(os.path.join(build, "lowbitd"), SHARED, ["--memory_limit=0"])
    with server:
        client = CliClient(os.path.join(build, "lowbit"), server)
        subprocess.check_call([synth, "--shape=llama2-7b", "--layers=2", "--output=" + os.path.join(server.store, "7b")],
                              stdout=subprocess.DEVNULL)
        data = open(TEXT, "rb").read()[:200000]
        json.dump([b + 3 for b in data], open(os.path.join(server.store, "calib.ids.json"), "w"))
        print("cancel latency, GPTQ 4-bit g128 on Llama-2-7B shapes, 32 x 256 calibration tokens:")
        print("| cancel sent after calibration started | latency s | at |")
        print("|---|---|---|")
        for i, delay in enumerate((2, 8, 20, 45, 70, 95)):
            name = client.submit("--input", "7b", "--output", "out/c%d" % i, "--method", "gptq", "--bits", "4",
                                 "--group-size", "128", "--calib", "calib.ids.json", "--calib-samples", "32",
                                 "--calib-seqlen", "256")
            client.wait_for(name, lambda j: j.get("phase") == "CALIBRATING", timeout=300)
            time.sleep(delay)
            sent = time.time()
            client.run("cancel", name)
            j = client.wait_for(name, lambda j: j["state"] not in ("RUNNING", "QUEUED"), timeout=300)
            print("| %d s | %.2f | %s (%s) |" % (delay, time.time() - sent, j.get("currentLayer", ""), j["state"]))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("build")
    parser.add_argument("--lowbit", help="another lowbit binary to run the SmolLM2 case with (e.g. an older build)")
    parser.add_argument("--only", choices=["7b", "smollm2"])
    parser.add_argument("--cancel", action="store_true", help="measure cancel latency on a calibrating 7B-shaped job")
    parser.add_argument("--smol-samples", type=int, default=32)
    parser.add_argument("--smol-seqlen", type=int, default=256)
    args = parser.parse_args()
    build = os.path.abspath(args.build)
    lowbit = args.lowbit or os.path.join(build, "lowbit")
    synth = os.path.join(build, "tests", "lowbit_synth")
    work = tempfile.mkdtemp(prefix="lowbit-calib-", dir=build)
    try:
        print("nproc %d; OPENBLAS_CORETYPE=%s" % (os.cpu_count(), os.environ.get("OPENBLAS_CORETYPE", "(unset)")))
        if args.cancel:
            cancel_latency(build, synth)
            return
        gflops = sgemm_gflops(build) if args.only != "smollm2" else float("nan")
        print("sgemm 4096^3 in this run: %.1f GFLOP/s" % gflops)
        ids = os.path.join(work, "calib.ids.json")
        if args.only != "smollm2":
            rows = []
            for blocks in (2, 4):
                src = os.path.join(work, "7b-%d" % blocks)
                subprocess.check_call([synth, "--shape=llama2-7b", "--layers=%d" % blocks, "--output=" + src],
                                      stdout=subprocess.DEVNULL)
                # Pre-tokenized calibration: ids from the text's bytes (the synthetic model has no tokenizer).
                data = open(TEXT, "rb").read()[:200000]
                json.dump([b + 3 for b in data], open(ids, "w"))
                seconds, rss, _ = run_rss([lowbit, "quantize", "--input", src, "--output", os.path.join(work, "out"),
                                           "--method", "gptq", "--bits", "4", "--group-size", "128", "--calib", ids,
                                           "--calib-samples", "32", "--calib-seqlen", "256", "--overwrite", "--json"])
                bound = lower_bound_flops(4096, 11008, 32, 32, 32 * 256, 256, blocks) / (gflops * 1e9)
                rows.append((blocks, seconds, rss, bound))
                shutil.rmtree(src)
            print("\nGPTQ 4-bit g128, 32 x 256 calibration tokens, Llama-2-7B shapes (BF16):")
            print("| blocks | wall s | peak RSS GB | FLOP lower bound s | wall / bound |")
            print("|---|---|---|---|---|")
            for blocks, seconds, rss, bound in rows:
                print("| %d | %.1f | %.2f | %.1f | %.2f |" % (blocks, seconds, rss / 1e9, bound, seconds / bound))
            (_, t2, r2, b2), (_, t4, r4, b4) = rows
            print("time(4)/time(2) = %.2f (aim <= 2.1); RSS(4)/RSS(2) = %.2f (aim 0.9..1.1)" % (t4 / t2, r4 / r2))
            per_block = (t4 - t2) / 2
            tokens_scale = (128 * 2048) / (32 * 256)
            full = lower_bound_flops(4096, 11008, 32, 32, 128 * 2048, 2048, 32) / (gflops * 1e9)
            measured_ratio = ((t4 - t2) / (b4 - b2)) if b4 > b2 else float("nan")
            print("projection, 32 blocks x 128 x 2048 tokens: lower bound %.0f s; at this run's wall/bound ratio "
                  "per added block (%.2f): %.0f s (%.1f h); per-block time scaled by tokens alone: %.1f h" % (
                      full, measured_ratio, full * measured_ratio, full * measured_ratio / 3600,
                      per_block * tokens_scale * 32 / 3600))
        if args.only != "7b":
            src = os.path.join(work, "smollm2")
            subprocess.check_call([synth, "--shape=smollm2-135m", "--output=" + src], stdout=subprocess.DEVNULL)
            tok = os.path.join(work, "bytes49152.bin")
            write_byte_tokenizer(tok, 49152)
            seconds, rss, out = run_rss([lowbit, "quantize", "--input", src, "--output", os.path.join(work, "smol-out"),
                                         "--method", "gptq", "--bits", "4", "--group-size", "64", "--tokenizer", tok,
                                         "--calib", TEXT, "--calib-samples", str(args.smol_samples),
                                         "--calib-seqlen", str(args.smol_seqlen), "--eval-text", TEXT,
                                         "--eval-windows", "4", "--eval-seqlen", "64", "--overwrite", "--json"])
            report = json.loads(out)
            ev = report.get("evaluation", {})
            print("\nSmolLM2-135M shapes (30 blocks), GPTQ 4-bit g64, %d x %d calibration tokens + evaluation "
                  "(4 x 64 tokens), %s:" % (args.smol_samples, args.smol_seqlen, lowbit))
            print("wall %.1f s, peak RSS %.2f GB, KL %.4f, perplexity %.2f (reference %.2f)" % (
                seconds, rss / 1e9, ev.get("kl_divergence", float("nan")), ev.get("perplexity", float("nan")),
                ev.get("reference_perplexity", float("nan"))))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
