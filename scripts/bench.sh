#!/usr/bin/env bash
# `make bench`: the Google Benchmark binaries, with the OpenBLAS core type they ran under.
set -euo pipefail
BUILD=${1:-build}
echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-(unset)}"
"$BUILD/tests/lowbit_bench" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
