"""`make stream-bench`: RTN 4-bit g128 of a synthetic checkpoint with Llama-2-7B layer shapes (BF16, a few GB)
from a local directory and from a local S3 server (s3rver, on disk), to local disk and to S3 respectively.
Prints throughput (MB of checkpoint per second) and peak RSS of each run, and their ratio. Then the data-free
job on F16 weights of the same shapes on 2 threads, to GGUF Q4_0 and to the GPTQ layout (symmetric 4-bit
g32, the same grid), with page faults and system time per GB of input beside a memcpy-bound copy (cp).
Usage: stream_bench.py BUILD_DIR [LAYERS]"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "e2e"))
from s3_servers import S3Server  # noqa: E402

build = sys.argv[1]
layers = sys.argv[2] if len(sys.argv) > 2 else "4"
root = os.path.dirname(os.path.abspath(__file__)) + "/.."
lowbit = os.path.join(build, "lowbit")
work = tempfile.mkdtemp(prefix="lowbit-stream-", dir=os.path.join(build))
src = os.path.join(work, "llama2-7b-shapes")


def timed(cmd, env=None):
    """Wall seconds and peak RSS (MB) of a command, from GNU time."""
    out = subprocess.run(["/usr/bin/time", "-f", "%e %M %U %S"] + cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    seconds, kb, user, system = out.stderr.strip().splitlines()[-1].split()
    print("  (lowbit CPU: %s s user + %s s system)" % (user, system))
    return float(seconds), int(kb) / 1024


def cpu_seconds(pid):
    """User + system CPU seconds of a running process, from /proc."""
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


try:
    subprocess.check_call([os.path.join(build, "tests", "lowbit_synth"), "--shape=llama2-7b", "--layers=" + layers,
                           "--output=" + src])
    size = os.path.getsize(os.path.join(src, "model.safetensors"))
    print("checkpoint: %.2f GB (Llama-2-7B shapes, %s decoder blocks, BF16); nproc %d; OPENBLAS_CORETYPE=%s" % (
        size / 1e9, layers, os.cpu_count(), os.environ.get("OPENBLAS_CORETYPE", "(unset)")))
    local_s, local_rss = timed([lowbit, "quantize", "--input", src, "--output", os.path.join(work, "out"),
                                "--bits", "4", "--group-size", "128"])
    print("local dir -> local dir: %.1f s, %.0f MB/s, peak RSS %.0f MB" % (local_s, size / 1e6 / local_s, local_rss))

    server = S3Server("s3rver", os.path.join(root, "tools", "node_modules"))
    try:
        s3 = server.client()
        s3.create_bucket(Bucket="bench")
        t = time.time()
        for f in os.listdir(src):
            s3.upload_file(os.path.join(src, f), "bench", "llama2-7b-shapes/" + f)
        print("(uploaded with boto3 in %.1f s)" % (time.time() - t))
        env = dict(os.environ, AWS_ACCESS_KEY_ID=server.access_key, AWS_SECRET_ACCESS_KEY=server.secret_key,
                   AWS_REGION="us-east-1", AWS_ENDPOINT_URL=server.endpoint)
        server_cpu = cpu_seconds(server.proc.pid)
        s3_s, s3_rss = timed([lowbit, "quantize", "--input", "s3://bench/llama2-7b-shapes", "--output", "s3://bench/out",
                              "--bits", "4", "--group-size", "128"], env=env)
        print("  (the S3 server used %.1f CPU-seconds of the same cores meanwhile)" % (cpu_seconds(server.proc.pid) - server_cpu))
        print("s3rver -> s3rver:       %.1f s, %.0f MB/s, peak RSS %.0f MB" % (s3_s, size / 1e6 / s3_s, s3_rss))
        print("S3 throughput / local throughput = %.2f" % (local_s / s3_s))
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)

    # F16 input, 2 threads: lowbit's two data-free targets for llama.cpp users, beside cp of the same bytes.
    f16 = os.path.join(work, "llama2-7b-f16")
    subprocess.check_call([os.path.join(build, "tests", "lowbit_synth"), "--shape=llama2-7b", "--layers=" + layers,
                           "--dtype=f16", "--output=" + f16])
    gb = os.path.getsize(os.path.join(f16, "model.safetensors")) / 1e9

    def measured(cmd):
        out = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %R"] + cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        wall, user, system, faults = out.stderr.strip().splitlines()[-1].split()
        return float(wall), float(user), float(system), int(faults)

    wall, user, system, faults = measured(["cp", os.path.join(f16, "model.safetensors"), os.path.join(work, "copy")])
    print("F16 checkpoint %.2f GB; cp: %.2f GB/s" % (gb, gb / wall))
    for name, args in [("GGUF Q4_0", ["--format", "gguf", "--gguf-type", "Q4_0", "--tokenizer",
                                      os.path.join(root, "tools", "node_modules", "@lenml", "tokenizer-llama2", "models", "tokenizer.json")]),
                       ("GPTQ layout 4-bit g32 sym", ["--bits", "4", "--group-size", "32", "--sym"])]:
        wall, user, system, faults = measured([lowbit, "quantize", "--input", f16, "--output", os.path.join(work, name[:4]),
                                               "--threads", "2", "--overwrite"] + args)
        print("rtn -> %-26s %.2f GB/s of F16 input on 2 threads (%.1f CPU-s); per GB: %.0fk minor page faults, %.2f s system"
              % (name + ":", gb / wall, user + system, faults / gb / 1e3, system / gb))
finally:
    shutil.rmtree(work, ignore_errors=True)
