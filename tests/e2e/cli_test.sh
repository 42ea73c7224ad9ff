#!/usr/bin/env bash
# `lowbit` as a user runs it: the real model through both input formats, and every kind of bad input
# giving a clear error, a non-zero exit and no output directory.
set -uo pipefail
LOWBIT=$1
DATA=$2
MODEL=$DATA/models/stories260K/stories260K.bin
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
failures=0

fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_error NAME PATTERN ARGS...: the command fails, stderr matches PATTERN, and no --output is left.
expect_error() {
  local name=$1 pattern=$2
  shift 2
  local out="$WORK/out-$name"
  if "$LOWBIT" "$@" --output "$out" >"$WORK/stdout" 2>"$WORK/stderr"; then
    fail "$name: exit status 0"
  elif ! grep -q -- "$pattern" "$WORK/stderr"; then
    fail "$name: stderr does not mention '$pattern': $(cat "$WORK/stderr")"
  elif [ -e "$out" ]; then
    fail "$name: left partial output in $out"
  else
    echo "ok: $name -> $(head -c 200 "$WORK/stderr")"
  fi
}

# The real model, llama2.c file and converted safetensors, must quantize to identical files.
"$LOWBIT" convert --input "$MODEL" --output "$WORK/hf" || fail "convert"
"$LOWBIT" quantize --input "$MODEL" --output "$WORK/q-bin" --method rtn --bits 4 --group-size 32 > "$WORK/table.txt" || fail "quantize .bin"
"$LOWBIT" quantize --input "$WORK/hf" --output "$WORK/q-st" --method rtn --bits 4 --group-size 32 --json > "$WORK/report.json" || fail "quantize safetensors"
cmp -s "$WORK/q-bin/model.safetensors" "$WORK/q-st/model.safetensors" || fail "outputs of .bin and safetensors inputs differ"
grep -q "model.layers.4.self_attn.o_proj.weight" "$WORK/table.txt" || fail "per-layer table lacks o_proj"
# stories260K's 172-wide MLP has no GPTQ form engines load: kept in FP16, in the report and the config.
/usr/bin/python3 - "$WORK/report.json" "$WORK/q-st/config.json" <<'PY' || fail "--json report"
import json, sys
r, config = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert len(r["layers"]) == 20, len(r["layers"])
for l in r["layers"]:
    assert set(["name", "method", "bits_per_weight", "relative_error", "seconds"]) <= set(l), l
    assert 0 < l["relative_error"] < 0.2, l
assert r["summary"]["layers_quantized"] == 20
kept = {k["name"]: k["reason"] for k in r["kept_in_high_precision"]}
assert len(kept) == 15 and "172" in kept["model.layers.4.mlp.down_proj.weight"], kept
assert "-:^model\\.layers\\.4\\.mlp\\.down_proj$" in config["quantization_config"]["dynamic"], config["quantization_config"]
PY
# The native layout holds any shape: all 35 layers.
"$LOWBIT" quantize --input "$MODEL" --output "$WORK/q-native" --method rtn --bits 4 --group-size 32 --format native --json > "$WORK/native.json" || fail "quantize native"
/usr/bin/python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert len(r['layers']) == 35, len(r['layers'])" "$WORK/native.json" || fail "native layers"

# The forward pass: greedy decoding reproduces llama2.c's reference text.
"$LOWBIT" generate --model "$MODEL" --tokenizer "$DATA/models/stories260K/tok512.bin" --steps 200 > "$WORK/generated.txt" || fail "generate"
cmp -s <(tr -d '\n' < "$WORK/generated.txt") <(tr -d '\n' < "$DATA/models/stories260K/golden_greedy_prefix.txt") \
  || fail "lowbit generate differs from golden_greedy_prefix.txt"

# GPTQ end to end with evaluation: calibrated on tiny-shakespeare, evaluated (read back from the written
# files) on WikiText-2; at the same bits it must be closer to the FP32 model than RTN.
TOK="$DATA/models/stories260K/tok512.bin"
EVAL=(--tokenizer "$TOK" --eval-text "$DATA/text/wikitext2-test.raw" --eval-windows 8 --json)
for cfg in "4 32" "3 32"; do
  set -- $cfg
  "$LOWBIT" quantize --input "$MODEL" --output "$WORK/gptq-$1" --method gptq --bits "$1" --group-size "$2" \
    --calib "$DATA/text/tiny-shakespeare.txt" --calib-samples 16 "${EVAL[@]}" > "$WORK/gptq-$1.json" || fail "gptq $cfg"
  "$LOWBIT" quantize --input "$MODEL" --output "$WORK/rtn-$1" --method rtn --bits "$1" --group-size "$2" \
    "${EVAL[@]}" > "$WORK/rtn-$1.json" || fail "rtn $cfg with evaluation"
  /usr/bin/python3 - "$WORK/gptq-$1.json" "$WORK/rtn-$1.json" <<'PY' || fail "gptq vs rtn at $cfg"
import json, sys
g, r = (json.load(open(p)) for p in sys.argv[1:3])
assert g["config"]["method"] == "gptq" and len(g["layers"]) == 20
ge, re_ = g["evaluation"], r["evaluation"]
assert ge["reference_perplexity"] == re_["reference_perplexity"] and ge["tokens"] == re_["tokens"] > 0
assert 0 < ge["kl_divergence"] < re_["kl_divergence"], (ge, re_)
print("ok: gptq %s-bit: KL %.4f < RTN %.4f; perplexity %.2f vs %.2f (FP32 %.2f)" % (
    g["config"]["bits"], ge["kl_divergence"], re_["kl_divergence"], ge["perplexity"], re_["perplexity"],
    ge["reference_perplexity"]))
PY
done
# lowbit eval on a written GPTQ model agrees with the job's own evaluation of it.
"$LOWBIT" eval --model "$WORK/gptq-4" --reference "$MODEL" --text "$DATA/text/wikitext2-test.raw" --tokenizer "$TOK" \
  --eval-windows 8 --json > "$WORK/eval.json" || fail "lowbit eval"
/usr/bin/python3 - "$WORK/eval.json" "$WORK/gptq-4.json" <<'PY' || fail "lowbit eval differs from the job's evaluation"
import json, sys
e, job = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))["evaluation"]
assert abs(e["perplexity"] - job["perplexity"]) < 1e-9 and abs(e["kl_divergence"] - job["kl_divergence"]) < 1e-12, (e, job)
print("ok: lowbit eval: perplexity %.4f, KL %.5f, as the job reported" % (e["perplexity"], e["kl_divergence"]))
PY
expect_error gptq-needs-calibration "calibration" quantize --input "$MODEL" --method gptq

# AWQ, LUT, VQ and OneBit on the real model, each evaluated from the files it wrote; `lowbit eval` reads the
# same files (AWQ and native layouts) and must agree with the job. AWQ must beat RTN's KL at 4-bit g32.
CALIB=(--calib "$DATA/text/tiny-shakespeare.txt" --calib-samples 16)
run_method() {  # name, args...
  local name=$1; shift
  "$LOWBIT" quantize --input "$MODEL" --output "$WORK/$name" "$@" "${EVAL[@]}" > "$WORK/$name.json" || { fail "quantize $name"; return; }
  "$LOWBIT" eval --model "$WORK/$name" --reference "$MODEL" --text "$DATA/text/wikitext2-test.raw" --tokenizer "$TOK" \
    --eval-windows 8 --json > "$WORK/$name-eval.json" || { fail "lowbit eval $name"; return; }
  /usr/bin/python3 - "$WORK/$name.json" "$WORK/$name-eval.json" "$name" <<'PY' || fail "$name report or eval"
import json, math, sys
r, e = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
job = r["evaluation"]
# The AWQ format keeps the 172-wide MLP in FP16 (engines refuse the shape); the native layout holds all 35.
assert len(r["layers"]) == (20 if sys.argv[3].startswith("awq") else 35), len(r["layers"])
assert all(0 < l["relative_error"] < 1.5 for l in r["layers"]), r["layers"][:2]
assert math.isfinite(job["kl_divergence"]) and job["kl_divergence"] > 0
assert abs(e["perplexity"] - job["perplexity"]) < 1e-9 and abs(e["kl_divergence"] - job["kl_divergence"]) < 1e-12, (e, job)
print("ok: %s: %.3f bits/weight, perplexity %.2f, KL %.4f (lowbit eval agrees)" % (
    sys.argv[3], r["summary"]["bits_per_weight"], job["perplexity"], job["kl_divergence"]))
PY
}
run_method awq-4 --method awq --bits 4 --group-size 32 --format awq "${CALIB[@]}"
run_method lut-4 --method lut --bits 4
run_method lut-3-grouped --method lut --bits 3 --granularity per_grouped_channel --group-size 16 --per-channel-scale "${CALIB[@]}"
run_method vq-2d --method vq --dim 2 --bits 2 "${CALIB[@]}"
run_method onebit --method onebit --decomposition svd
/usr/bin/python3 - "$WORK/awq-4.json" "$WORK/rtn-4.json" "$WORK/awq-4/config.json" <<'PY' || fail "awq vs rtn"
import json, sys
a, r, config = (json.load(open(p)) for p in sys.argv[1:4])
assert config["quantization_config"]["quant_method"] == "awq" and config["quantization_config"]["version"] == "gemm"
assert a["evaluation"]["kl_divergence"] < r["evaluation"]["kl_divergence"], (a["evaluation"], r["evaluation"])
print("ok: awq 4-bit KL %.4f < RTN %.4f" % (a["evaluation"]["kl_divergence"], r["evaluation"]["kl_divergence"]))
PY
expect_error awq-needs-calibration "calibration" quantize --input "$MODEL" --method awq
expect_error awq-format-bits "AWQ format packs 4-bit" quantize --input "$MODEL" --method awq --bits 3 --format awq "${CALIB[@]}" --tokenizer "$TOK"
expect_error awq-lm-head "the awq format.s engines load lm_head in FP16 only" quantize --input "$MODEL" --method rtn --format awq --quantize-lm-head
expect_error lut-as-gptq "gptq takes rtn, int8, gptq or awq results, not lut.s (written as native)" quantize --input "$MODEL" --method lut --format gptq
expect_error gguf-type "unknown ggml type or mixture 'Q3_K_XL'" quantize --input "$MODEL" --format gguf --gguf-type Q3_K_XL --tokenizer "$TOK"
expect_error gguf-lut "gguf takes rtn, gptq or awq results, not lut" quantize --input "$MODEL" --method lut --format gguf --tokenizer "$TOK"
expect_error gguf-override "overrides: not supported with the gguf format" quantize --input "$MODEL" --format gguf --override '*.q_proj.weight=8' --tokenizer "$TOK"
expect_error imatrix-rtn "write_imatrix: the statistics come from calibration" quantize --input "$MODEL" --imatrix
expect_error lut-bits "bits: LUT palettization takes 1, 2, 3, 4, 6 or 8" quantize --input "$MODEL" --method lut --bits 5
expect_error lut-unique "distinct values do not fit" quantize --input "$MODEL" --method lut --mode unique --bits 2
expect_error vq-dim "dim: must be 1, 2 or 4" quantize --input "$MODEL" --method vq --dim 3 "${CALIB[@]}" --tokenizer "$TOK"
expect_error calibrated-lm-head "quantize_lm_head: calibration covers the decoder blocks only" quantize --input "$MODEL" --method vq "${CALIB[@]}" --tokenizer "$TOK" --quantize-lm-head
expect_error onebit-refine "onebit needs a calibration text" quantize --input "$MODEL" --method onebit --refine-iterations 2

# Bad inputs.
printf 'abc' > "$WORK/truncated.safetensors"
expect_error truncated "truncated.safetensors" quantize --input "$WORK/truncated.safetensors"
python3 -c "import struct,sys; open(sys.argv[1],'wb').write(struct.pack('<Q', 999999) + b'{}')" "$WORK/hdrlen.safetensors"
expect_error header-length "past the end" quantize --input "$WORK/hdrlen.safetensors"
python3 -c "import struct,sys; h=b'{\"a\": ['; open(sys.argv[1],'wb').write(struct.pack('<Q', len(h)) + h)" "$WORK/badjson.safetensors"
expect_error invalid-json "not a valid JSON" quantize --input "$WORK/badjson.safetensors"
python3 - "$WORK/f64.safetensors" <<'PY'
import json, struct, sys
h = json.dumps({"model.layers.0.mlp.up_proj.weight": {"dtype": "F64", "shape": [2, 2], "data_offsets": [0, 32]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"\0" * 32)
PY
expect_error unsupported-dtype "unsupported dtype F64" quantize --input "$WORK/f64.safetensors"
python3 - "$WORK/nan.safetensors" <<'PY'
import json, struct, sys
h = json.dumps({"model.layers.0.mlp.up_proj.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + struct.pack("<4f", 1.0, float("nan"), 2.0, 3.0))
PY
expect_error nan-weights "model.layers.0.mlp.up_proj.weight.*non-finite" quantize --input "$WORK/nan.safetensors"
# A linear layer with a zero dimension (it once divided by zero in every method): kept as it is, said so.
for shape in "0, 64" "64, 0"; do
  python3 - "$WORK/empty.safetensors" "$shape" <<'PY'
import json, struct, sys
h = json.dumps({"model.layers.0.self_attn.q_proj.weight": {"dtype": "F32", "shape": json.loads("[" + sys.argv[2] + "]"),
                                                            "data_offsets": [0, 0]}}).encode()
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h)
PY
  for method in rtn lut onebit; do
    "$LOWBIT" quantize --input "$WORK/empty.safetensors" --output "$WORK/empty-out" --method "$method" --overwrite --json \
      > "$WORK/empty.json" 2> "$WORK/stderr" || fail "[$shape] $method on an empty layer: $(tail -c 300 "$WORK/stderr")"
    grep -q "has no values (a zero dimension)" "$WORK/empty.json" || fail "[$shape] $method: the empty layer is not reported as kept"
  done
done
head -c 300000 "$MODEL" > "$WORK/short.bin"
expect_error truncated-llama2c "short.bin" quantize --input "$WORK/short.bin"
expect_error missing "no checkpoint" quantize --input "$WORK/nothing-here"
expect_error unknown-method "unknown method 'zzz'" quantize --input "$MODEL" --method zzz
expect_error bits-range "bits: must be in 2..8" quantize --input "$MODEL" --bits 9
expect_error group-size "group_size" quantize --input "$MODEL" --group-size -5

if [ "$failures" -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all CLI checks passed"
