#!/usr/bin/env bash
# make docker-test: the container image built and run for real, without any registry.
#   1. a Docker daemon: the one running, or Debian's dockerd started here (and stopped at the end);
#   2. a bookworm base image made with debootstrap from Debian's archive and imported (cached by tag);
#   3. the image built from the Dockerfile, labelled with the version and commit;
#   4. lowbitd in a container as the restricted pod runs it (uid 65534, read-only root, no capabilities,
#      no new privileges), a job run through it with python3-grpcio, health and metrics checked;
#   5. the container stopped with SIGTERM and seen to exit 0.
# Usage: docker_test.sh [SHARED_DATA]
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${1:-$(cd .. && pwd)/shared/data}
ROOT=${LOWBIT_DOCKER_ROOT:-/var/tmp/lowbit-docker}
BASE=lowbit-base:bookworm
IMAGE=lowbit:test
started=$(date +%s)
work=$(mktemp -d /tmp/lowbit-docker-test-XXXXXX)
dockerd_pid=""
container=""
cleanup() {
  [ -n "$container" ] && docker rm -f "$container" >/dev/null 2>&1 || true
  if [ -n "$dockerd_pid" ]; then kill "$dockerd_pid" 2>/dev/null || true; wait "$dockerd_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if ! docker info >/dev/null 2>&1; then
  # No bridge or iptables: containers use the host's network, which needs neither.
  mkdir -p "$ROOT"
  export DOCKER_HOST="unix://$ROOT/docker.sock"
  dockerd --host "$DOCKER_HOST" --data-root "$ROOT/data" --exec-root "$ROOT/exec" --pidfile "$ROOT/docker.pid" \
    --iptables=false --ip-masq=false --bridge=none >"$ROOT/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 100); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { tail -20 "$ROOT/dockerd.log"; echo "docker-test: dockerd did not start"; exit 1; }
  echo "docker-test: started dockerd (data in $ROOT)"
fi

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "docker-test: making $BASE with debootstrap"
  debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
  tar -C "$work/rootfs" -c . | docker import - "$BASE" >/dev/null
  rm -rf "$work/rootfs"
fi

build_started=$(date +%s)
docker build --network host --build-arg BASE="$BASE" --build-arg VERSION="$(git describe --always --dirty)" \
  --build-arg COMMIT="$(git rev-parse HEAD)" -t "$IMAGE" . >"$work/build.log" 2>&1 ||
  { tail -40 "$work/build.log"; exit 1; }
build_seconds=$(( $(date +%s) - build_started ))

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc_port=$(free_port); metrics_port=$(free_port); health_port=$(free_port)
mkdir -p "$work/data" "$work/state"
cp "$SHARED/models/stories260K/stories260K.bin" "$work/data/"
chmod 0777 "$work/data" "$work/state"  # the container writes as nobody
container=$(docker run -d --network host --read-only --cap-drop ALL --security-opt no-new-privileges \
  --user 65534:65534 -v "$work/data:/data" -v "$work/state:/state" "$IMAGE" \
  --grpc_address="127.0.0.1:$grpc_port" --metrics_address="127.0.0.1:$metrics_port" \
  --health_address="127.0.0.1:$health_port" --grace_period=5s)
/usr/bin/python3 tests/e2e/container_client.py "$grpc_port" "$metrics_port" "$health_port" "$work/data" \
  tools/node_modules/@grpc/reflection/build/proto || { docker logs "$container" | tail -20; exit 1; }

docker stop --time 30 "$container" >/dev/null  # SIGTERM, then SIGKILL after 30 s
code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
docker logs "$container" 2>&1 | tail -3
[ "$code" = 0 ] || { echo "docker-test: lowbitd exited $code on SIGTERM"; exit 1; }
echo "ok: the container exits 0 on SIGTERM"
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
labels=$(docker image inspect -f '{{json .Config.Labels}}' "$IMAGE")
echo "docker-test: image $IMAGE $((size / 1000000)) MB (base $(( $(docker image inspect -f '{{.Size}}' "$BASE") / 1000000 )) MB), labels $labels"
echo "docker-test: built in ${build_seconds} s; all checks passed in $(( $(date +%s) - started )) s"
