#!/usr/bin/env bash
# `make run`: quantize the bundled real model (stories260K) with RTN 4-bit g32, from the llama2.c file
# and from its Hugging Face conversion, printing the per-layer table and the report.
set -euo pipefail
BUILD=${1:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL="$ROOT/../shared/data/models/stories260K/stories260K.bin"
WORK="$ROOT/$BUILD/demo"
LOWBIT="$ROOT/$BUILD/lowbit"

[ -f "$MODEL" ] || { echo "run: $MODEL not found (../shared/data must sit beside the checkout)"; exit 1; }
rm -rf "$WORK"
mkdir -p "$WORK"

echo "== lowbit convert: llama2.c -> Hugging Face safetensors"
"$LOWBIT" convert --input "$MODEL" --output "$WORK/stories260K-hf"

echo
echo "== lowbit quantize stories260K.bin: RTN 4-bit, group 32"
"$LOWBIT" quantize --input "$MODEL" --output "$WORK/stories260K-rtn4-g32" --method rtn --bits 4 --group-size 32

echo
echo "== lowbit quantize stories260K-hf (safetensors): RTN 4-bit, group 32"
"$LOWBIT" quantize --input "$WORK/stories260K-hf" --output "$WORK/stories260K-hf-rtn4-g32" --method rtn --bits 4 --group-size 32 | tail -n 2

if cmp -s "$WORK/stories260K-rtn4-g32/model.safetensors" "$WORK/stories260K-hf-rtn4-g32/model.safetensors"; then
  echo "both inputs produced byte-identical model.safetensors"
else
  echo "run: outputs of the two inputs differ"; exit 1
fi
echo
echo "output files:"
ls -l "$WORK/stories260K-rtn4-g32"
