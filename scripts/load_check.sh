#!/usr/bin/env bash
# `make load-check`: 50 clients polling GetJob while lowbitd quantizes a synthetic SmolLM2-135M-shaped
# checkpoint (BF16); prints GetJob latency percentiles and the job's time with and without the load.
set -euo pipefail
BUILD=${1:-build}
shift || true
WORK="$BUILD/loadcheck"
rm -rf "$WORK"
mkdir -p "$WORK/store"
"$BUILD/tests/lowbit_synth" --shape=smollm2-135m --output="$WORK/store/smollm2-135m-synthetic"
"$BUILD/lowbitd" --grpc_address=127.0.0.1:0 --metrics_address=127.0.0.1:0 --store_root="$WORK/store" \
  --state_dir="$WORK/state" --ready_file="$WORK/ready" 2> "$WORK/lowbitd.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -f "$WORK/ready" ] && break; sleep 0.1; done
read -r PORT _ < "$WORK/ready"
echo "nproc $(nproc); OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}"
"$BUILD/tests/lowbit_load_check" --server "127.0.0.1:$PORT" --input smollm2-135m-synthetic "$@"
kill -TERM $PID
wait $PID
trap - EXIT
rm -rf "$WORK/store"
