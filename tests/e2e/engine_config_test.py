#!/usr/bin/python3
"""What lowbit writes, read the way the serving engines read it: one check per engine rule.

Each rule below is written from the engine's loader (cited), applied with Python's own `re` and NumPy to the
files `lowbit quantize` wrote for tiny random checkpoints (tests/reference/hf_reference.py): a Llama whose
layers all have loadable shapes, and a Qwen3 whose 48-wide MLP none of the engines can load.

Usage: engine_config_test.py LOWBIT
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import hf_reference  # noqa: E402

LOWBIT = sys.argv[1]
failures = []


def check(ok, rule, detail=""):
    print("%s: %s%s" % ("ok" if ok else "FAIL", rule, (" (" + detail + ")") if detail else ""))
    if not ok:
        failures.append(rule)


def read_safetensors(path):
    """{name: (dtype, shape, bytes)} from a safetensors file, parsed here from the format's definition."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]])
            for k, v in header.items() if k != "__metadata__"}


def read_model(folder):
    index = os.path.join(folder, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    tensors = {}
    for f in files:
        tensors.update(read_safetensors(os.path.join(folder, f)))
    return tensors


def array(t):
    dtype, shape, data = t
    return np.frombuffer(data, dtype={"F32": "<f4", "F16": "<f2", "I32": "<i4", "U8": "u1"}[dtype]).reshape(shape)


def unpack_rows(words, bits, count):
    """GPTQ's packing along dim 0: a little-endian bit stream per column of int32 words (AutoGPTQ's pack)."""
    w = words.astype(np.uint32).astype(np.uint64)
    stream = np.zeros((count, w.shape[1]), dtype=np.int64)
    for i in range(count):
        bit = i * bits
        word, shift = bit // 32, bit % 32
        v = w[word] >> np.uint64(shift)
        if shift + bits > 32:
            v |= w[word + 1] << np.uint64(32 - shift)
        stream[i] = (v & np.uint64((1 << bits) - 1)).astype(np.int64)
    return stream


def dequantize_gptq(t, prefix, bits, rows, cols, v2):
    """The dequantization of vLLM's and AutoGPTQ's torch paths: W[o, i] = s[g, o] * (q[i, o] - z[g, o])."""
    q = unpack_rows(array(t[prefix + ".qweight"]), bits, cols)                   # [in, out]
    z = unpack_rows(array(t[prefix + ".qzeros"]).T, bits, rows).T + (0 if v2 else 1)  # [groups, out]
    s = array(t[prefix + ".scales"]).astype(np.float64)                         # [groups, out]
    g = array(t[prefix + ".g_idx"])
    return (s[g] * (q - z[g])).T


def get_dynamic_override(dynamic, layer_name, key=None, default=None):
    """vllm/model_executor/layers/quantization/utils/gptq_utils.py: get_dynamic_override."""
    for pattern, pattern_dict in dynamic.items():
        if pattern.startswith("-:"):
            if re.match(pattern.removeprefix("-:"), layer_name):
                return False
        elif re.match(pattern.removeprefix("+:"), layer_name):
            return pattern_dict if key is None else pattern_dict.get(key, default)
    return default


def linear_modules(source):
    return sorted(k[:-len(".weight")] for k, v in source.items()
                  if ".layers." in k and k.endswith(".weight") and len(v[1]) == 2)


def quantize(name, *args):
    out = os.path.join(work, "out-" + name)
    run = subprocess.run([LOWBIT, "quantize", "--output", out, "--json", *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit("lowbit quantize %s failed: %s" % (name, run.stderr))
    return out, json.loads(run.stdout)


def check_gptq(name, folder, report, source, expect_sym):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    qc = cfg["quantization_config"]
    t = read_model(folder)
    check(json.load(open(os.path.join(folder, "quantize_config.json"))) == qc,
          "%s: quantize_config.json (GPTQModel) equals config.json's quantization_config (transformers, vLLM)" % name)
    v2 = qc["checkpoint_format"] == "gptq_v2"
    # optimum's gptq quantizer: "gptq(v1) can only support sym=True"; GPTQModel's FORMAT.GPTQ_V2 for asym.
    check(qc["sym"] == expect_sym and v2 == (not expect_sym) and qc.get("format") == qc["checkpoint_format"],
          "%s: sym %s written as checkpoint_format %s" % (name, qc["sym"], qc["checkpoint_format"]))
    check(qc["meta"]["quantizer"][0].startswith("lowbit:") and qc["pack_dtype"] == "int32",
          "%s: GPTQModel's meta.quantizer and pack_dtype" % name)
    # transformers reads torch_dtype (4.x) or dtype; the kernels' activations are the scales' dtype.
    check(cfg["torch_dtype"] == cfg["dtype"] == "float16" and
          all(v[0] == "F16" for k, v in t.items() if k.endswith(".scales")) and
          all(v[0] in ("F16", "I32") for v in t.values()),
          "%s: torch_dtype/dtype float16, scales and every kept tensor F16" % name)
    layers = {l["name"][:-len(".weight")]: l for l in report["layers"]}
    dynamic = qc.get("dynamic", {})
    blocks = {}
    for m in linear_modules(source):
        out_features, in_features = source[m + ".weight"][1]
        quantized = (m + ".qweight") in t
        skipped = get_dynamic_override(dynamic, m) is False
        check(quantized != skipped and (quantized or t[m + ".weight"][0] == "F16"),
              "%s: %s %s by vLLM's dynamic rules" % (name, m, "skipped" if skipped else "quantized"))
        if not quantized:
            continue
        block = int(m.split(".layers.")[1].split(".")[0])
        blocks.setdefault(block, set()).add(m.split(".layers.%d." % block)[1])
        bits = get_dynamic_override(dynamic, m, "bits", qc["bits"])
        group = get_dynamic_override(dynamic, m, "group_size", qc["group_size"])
        sym = get_dynamic_override(dynamic, m, "sym", qc["sym"])
        stored_bits = t[m + ".qweight"][1][0] * 32 // in_features
        groups = t[m + ".scales"][1][0]
        check(bits == stored_bits and groups == (1 if group == -1 else in_features // group),
              "%s: %s stored as the rules say (%d-bit, group %d, sym %s)" % (name, m, bits, group, sym))
        # vLLM's gptq.py create_weights: input % group_size and output % pack_factor; 32 for the 3-bit packing.
        check(in_features % 32 == 0 and out_features % 32 == 0 and (group == -1 or in_features % group == 0),
              "%s: %s shape %dx%d loadable" % (name, m, out_features, in_features))
        w = array(source[m + ".weight"]).astype(np.float64)
        deq = dequantize_gptq(t, m, bits, out_features, in_features, v2)
        error = np.linalg.norm(w - deq) / np.linalg.norm(w)
        check(abs(error - layers[m]["relative_error"]) < 1e-5 * max(1.0, error),
              "%s: %s dequantized as the engines do (%s zeros) gives the reported error %.5f" % (
                  name, m, "v2" if v2 else "v1", error))
        if expect_sym and not v2:
            z = unpack_rows(array(t[m + ".qzeros"]).T, bits, out_features)
            check(bool(np.all(z == (1 << (bits - 1)) - 1)), "%s: %s symmetric zeros stored as 2^(b-1)-1 (v1)" % (name, m))
        stored = sum(len(t[m + s][2]) for s in (".qweight", ".qzeros", ".scales", ".g_idx"))
        check(abs(layers[m]["bits_per_weight"] - 8.0 * stored / (out_features * in_features)) < 1e-9,
              "%s: %s bits per weight %.4f = every stored byte" % (name, m, layers[m]["bits_per_weight"]))
    kept = {k["name"][:-len(".weight")] for k in report["kept_in_high_precision"]}
    if "modules_in_block_to_quantize" in qc:
        listed = {x for group in qc["modules_in_block_to_quantize"] for x in group}
        check(all(names == listed for names in blocks.values()),
              "%s: optimum's modules_in_block_to_quantize lists exactly the quantized modules of every block" % name)
    else:
        check(not kept or len({frozenset(v) for v in blocks.values()}) > 1,
              "%s: modules_in_block_to_quantize absent only when nothing is kept or blocks differ" % name)
    check(qc["lm_head"] == ("lm_head.qweight" in t), "%s: lm_head %s (vLLM's and GPTQModel's lm_head flag)" % (name, qc["lm_head"]))


work = tempfile.mkdtemp(prefix="lowbit-engines-")
rng = np.random.default_rng(7)
configs = {
    "wide": hf_reference.base_config("LlamaForCausalLM", "llama", hidden_size=64, intermediate_size=128),
    "narrow": hf_reference.VARIANTS["qwen3_qk_norm"],
}
sources = {}
for key, config in configs.items():
    folder = os.path.join(work, key)
    os.makedirs(folder)
    weights = hf_reference.random_weights(config, rng)
    hf_reference.write_safetensors(os.path.join(folder, "model.safetensors"), weights)
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    sources[key] = read_safetensors(os.path.join(folder, "model.safetensors"))
ids = os.path.join(work, "calib.ids.json")
json.dump([rng.integers(0, hf_reference.VOCAB, 32).tolist() for _ in range(8)], open(ids, "w"))
calib = ["--calib", ids, "--calib-samples", "8", "--calib-seqlen", "32"]
wide, narrow = os.path.join(work, "wide"), os.path.join(work, "narrow")

folder, report = quantize("gptq-sym", "--input", wide, "--method", "gptq", "--bits", "4", "--group-size", "32", *calib)
check_gptq("gptq default", folder, report, sources["wide"], expect_sym=True)
folder, report = quantize("gptq-asym", "--input", wide, "--method", "gptq", "--bits", "4", "--group-size", "32", "--nosym", *calib)
check_gptq("gptq --nosym", folder, report, sources["wide"], expect_sym=False)
folder, report = quantize("rtn-rules", "--input", wide, "--method", "rtn", "--bits", "4", "--group-size", "32", "--sym",
                          "--exclude", "*.layers.1.mlp.down_proj.weight", "--override", "*.self_attn.o_proj.weight=8/64",
                          "--quantize-lm-head", "--shard-size", "20K")
check(os.path.exists(os.path.join(folder, "model.safetensors.index.json")), "rtn rules: sharded output with its index")
check_gptq("rtn --exclude --override --quantize-lm-head", folder, report, sources["wide"], expect_sym=True)
# A budget job: each layer's bits and group size chosen by the allocator, declared as per-module dynamic rules.
folder, report = quantize("budget", "--input", wide, "--format", "gptq", "--target-bpw", "4.5", *calib)
check_gptq("budget --target-bpw 4.5", folder, report, sources["wide"], expect_sym=True)
settings = {l["setting"] for l in report["allocation"]["layers"]}
stored = {l["bits_per_weight"] for l in report["layers"]}
check(len(settings) >= 2 and len(stored) >= 2 and report["summary"]["bits_per_weight"] <= 4.5,
      "budget: the allocation mixes settings (%s) within 4.5 bits per weight (%.3f)" % (
          ", ".join(sorted(settings)), report["summary"]["bits_per_weight"]))
folder, report = quantize("narrow", "--input", narrow, "--method", "rtn", "--bits", "4", "--group-size", "128", "--sym")
check_gptq("48-wide MLP, group 128 over 32 inputs", folder, report, sources["narrow"], expect_sym=True)
kept = {k["name"]: k["reason"] for k in report["kept_in_high_precision"]}
check(len(kept) == 6 and all("48 is not a multiple of 32" in r for r in kept.values()),
      "the 48-wide MLP layers are kept in FP16 with the reason in the report", json.dumps(kept)[:160])

folder, report = quantize("awq", "--input", narrow, "--method", "awq", "--format", "awq", "--group-size", "32", *calib)
qc = json.load(open(os.path.join(folder, "config.json")))["quantization_config"]
t = read_model(folder)
not_converted = qc.get("modules_to_not_convert", [])
for m in linear_modules(sources["narrow"]):
    # vllm/model_executor/layers/quantization/awq.py is_layer_skipped_awq; transformers' replace_with_awq_linear.
    skipped = any(module in m for module in not_converted)
    quantized = (m + ".qweight") in t
    check(skipped != quantized and (quantized or t[m + ".weight"][0] == "F16"),
          "awq: %s %s by modules_to_not_convert" % (m, "skipped" if skipped else "converted"))
    if quantized:
        out_features, in_features = sources["narrow"][m + ".weight"][1]
        check(out_features % 8 == 0 and in_features % qc["group_size"] == 0, "awq: %s shape loadable (awq.py)" % m)
check(qc["quant_method"] == "awq" and qc["version"] == "gemm", "awq: quant_method awq, version gemm")

subprocess.run(["rm", "-rf", work])
print("%d rule check(s) failed" % len(failures) if failures else "PASSED")
sys.exit(1 if failures else 0)
