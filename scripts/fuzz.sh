#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, AddressSanitizer + UBSan) and runs each for SECONDS from its committed
# seed corpus, JOBS at a time. Exits non-zero if any target finds a crash, a leak, undefined behaviour or a
# timeout; the input is kept in BUILD/artifacts/<target>/. Prints the executions per target.
# Usage: scripts/fuzz.sh [BUILD=build-fuzz] [SECONDS=30] [JOBS=nproc]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-fuzz}
SECONDS_EACH=${2:-30}
JOBS=${3:-$(nproc)}
TARGETS=(safetensors safetensors_index llama2c gguf config tokenizer ids_json request job)

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE=-O1 \
      -DLOWBIT_FUZZ=ON > "$BUILD.configure.log" 2>&1 || { cat "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" --target fuzz_targets -j "$(nproc)"

run_one() {
  local target=$1 work="$BUILD/fuzz-work/$1" artifacts="$BUILD/artifacts/$1"
  rm -rf "$work" && mkdir -p "$work" "$artifacts"
  # New inputs go to the scratch corpus (first directory); the committed seeds are only read.
  if "$BUILD/tests/fuzz/${target}_fuzz" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=2560 \
       -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" "tests/fuzz/corpus/$target" > "$BUILD/fuzz-work/$target.log" 2>&1; then
    printf '%-18s ok   %s executions\n' "$target" "$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$BUILD/fuzz-work/$target.log" | grep -o '[0-9]*$')"
  else
    printf '%-18s FAILED (log %s, input in %s)\n' "$target" "$BUILD/fuzz-work/$target.log" "$artifacts"
    grep -m3 -E 'ERROR|SUMMARY|runtime error' "$BUILD/fuzz-work/$target.log" || true
    return 1
  fi
}
export -f run_one
export BUILD SECONDS_EACH
echo "fuzzing ${#TARGETS[@]} targets for ${SECONDS_EACH} s each, ${JOBS} at a time (ASan + UBSan)"
printf '%s\n' "${TARGETS[@]}" | xargs -P "$JOBS" -I{} bash -c 'run_one {}'
