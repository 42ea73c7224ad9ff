#!/usr/bin/env bash
# `make run`: the main job on the embedded defaults. Starts lowbitd on a local-directory object store
# under the build folder (seeded with the bundled stories260K), submits an RTN 4-bit g32 job with the
# lowbit CLI, watches it to the end, then a GPTQ job calibrated block by block with an evaluation against
# the source (perplexity and KL), prints the reports and stops the server with SIGTERM.
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA="$ROOT/../shared/data"
MODEL="$DATA/models/stories260K/stories260K.bin"
WORK="$ROOT/$BUILD/demo"
LOWBIT="$ROOT/$BUILD/lowbit"

[ -f "$MODEL" ] || { echo "run: $MODEL not found (../shared/data must sit beside the checkout)"; exit 1; }
rm -rf "$WORK"
mkdir -p "$WORK/store/models"
cp "$MODEL" "$DATA/models/stories260K/tok512.bin" "$WORK/store/models/"
mkdir -p "$WORK/store/text"
cp "$DATA/text/tiny-shakespeare.txt" "$DATA/text/wikitext2-test.raw" "$WORK/store/text/"

"$ROOT/$BUILD/lowbitd" --grpc_address=127.0.0.1:0 --metrics_address=127.0.0.1:0 \
  --store_root="$WORK/store" --state_dir="$WORK/state" --ready_file="$WORK/ready" 2> "$WORK/lowbitd.log" &
SERVER_PID=$!
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -f "$WORK/ready" ] && break; sleep 0.1; done
[ -f "$WORK/ready" ] || { cat "$WORK/lowbitd.log"; exit 1; }
read -r GRPC_PORT METRICS_PORT < "$WORK/ready"
SERVER=127.0.0.1:$GRPC_PORT
echo "== lowbitd serving gRPC on $SERVER, metrics on 127.0.0.1:$METRICS_PORT, store $WORK/store"

echo "== lowbit submit: stories260K, RTN 4-bit, group 32 (watching)"
"$LOWBIT" submit --server "$SERVER" --input models/stories260K.bin --output quantized/stories260K-rtn4-g32 \
  --method rtn --bits 4 --group-size 32 --request-id make-run --watch

echo
echo "== the same job from the Hugging Face conversion (lowbit convert -> model.safetensors + config.json)"
"$LOWBIT" convert --input "$WORK/store/models/stories260K.bin" --output "$WORK/store/models/stories260K-hf"
"$LOWBIT" submit --server "$SERVER" --input models/stories260K-hf --output quantized/stories260K-hf-rtn4-g32 \
  --method rtn --bits 4 --group-size 32 --watch | tail -n 2
if cmp -s "$WORK/store/quantized/stories260K-rtn4-g32/model.safetensors" \
          "$WORK/store/quantized/stories260K-hf-rtn4-g32/model.safetensors"; then
  echo "the .bin and the safetensors inputs gave byte-identical model.safetensors"
else
  echo "run: the two inputs gave different outputs"; exit 1
fi

echo
echo "== lowbit submit: GPTQ 4-bit g32, calibrated block by block on tiny-shakespeare, evaluated on WikiText-2"
"$LOWBIT" submit --server "$SERVER" --input models/stories260K.bin --output quantized/stories260K-gptq4-g32 \
  --method gptq --bits 4 --group-size 32 --tokenizer models/tok512.bin --calib text/tiny-shakespeare.txt \
  --eval-text text/wikitext2-test.raw --request-id make-run-gptq --watch

echo
echo "== lowbit list"
"$LOWBIT" list --server "$SERVER"

echo
echo "== report summary (lowbit_report.json)"
/usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["summary"], indent=2))' \
  "$WORK/store/quantized/stories260K-rtn4-g32/lowbit_report.json"
ls -l "$WORK/store/quantized/stories260K-rtn4-g32"
/usr/bin/python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print("gptq:", json.dumps({**r["summary"], "evaluation": r["evaluation"]}, indent=2))' \
  "$WORK/store/quantized/stories260K-gptq4-g32/lowbit_report.json"

echo
echo "== stopping lowbitd (SIGTERM)"
kill -TERM $SERVER_PID
wait $SERVER_PID
trap - EXIT
tail -n 2 "$WORK/lowbitd.log"
