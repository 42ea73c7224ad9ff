#!/usr/bin/env bash
# Installs what lowbit needs to build and test on Debian bookworm. Idempotent: a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libopenblas-dev prometheus-cpp-dev libcurl4-openssl-dev libssl-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libpcre2-dev libicu-dev libsentencepiece-dev sentencepiece
  python3-grpcio python3-numpy python3-cryptography python3-yaml openssl prometheus
  clang libclang-rt-14-dev
  libpqxx-dev postgresql
  gnuplot-nox
)
# `setup.sh docker`: also what `make docker-test` runs (Debian's Docker engine, debootstrap for the base image).
[ "${1:-}" = docker ] && APT_PACKAGES+=(docker.io debootstrap)
# Node may come from Debian or from NodeSource (which bundles npm); only ask apt when the commands are absent.
command -v node >/dev/null || APT_PACKAGES+=(nodejs)
command -v npm >/dev/null || APT_PACKAGES+=(npm)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Test-only Node tools (googleapis protos, independent gRPC client, S3 server) live in a project-local folder.
if [ ! -f tools/node_modules/.installed ] || [ tools/package-lock.json -nt tools/node_modules/.installed ]; then
  echo "setup: installing npm test tools into tools/node_modules"
  # --omit=optional: node-llama-cpp's optional prebuilt binaries for every platform are 725 MB; the Linux x64
  # CPU build it needs here is a direct dependency (@node-llama-cpp/linux-x64). `npm install` with the lock
  # file, not `npm ci`: npm records only this platform's optional packages in the lock and `npm ci` then
  # refuses it as out of sync; the install leaves the lock unchanged.
  (cd tools && npm install --omit=optional --no-audit --no-fund --loglevel=error)
  touch tools/node_modules/.installed
fi
