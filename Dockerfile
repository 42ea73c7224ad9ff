# lowbitd and the lowbit CLI on Debian bookworm, the distribution their dependencies come from.
#
#   docker build --build-arg VERSION=$(git describe --always) --build-arg COMMIT=$(git rev-parse HEAD) -t lowbit .
#
# The build reads the protos of two npm packages from tools/node_modules (`make setup` installs them);
# .dockerignore sends nothing else of tools/. BASE may name any bookworm image: `make docker-test` makes
# one with debootstrap, so no registry is needed.
ARG BASE=debian:bookworm

FROM ${BASE} AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      libopenblas-dev prometheus-cpp-dev libcurl4-openssl-dev libssl-dev nlohmann-json3-dev \
      libpcre2-dev libicu-dev libpqxx-dev libsentencepiece-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_TESTS=OFF \
    && cmake --build /build --target lowbitd lowbit \
    && strip /build/lowbitd /build/lowbit

FROM ${BASE}
ARG VERSION=unknown
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="lowbit" \
      org.opencontainers.image.description="LLM checkpoint quantization as a gRPC batch service" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.base.name="debian:bookworm"
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libopenblas0-pthread libprometheus-cpp-core1.0 \
      libcurl4 libssl3 libpq5 libpqxx-6.4 libicu72 libpcre2-8-0 ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt /var/log/dpkg.log
COPY --from=build /build/lowbitd /build/lowbit /usr/local/bin/
# Runs as nobody, with nothing to write but the mounted store and state volumes (the root filesystem
# can be read-only): /data is the store root, /state the on-disk job store of a single node.
USER 65534:65534
WORKDIR /data
EXPOSE 50051 9464 50052
ENTRYPOINT ["/usr/local/bin/lowbitd", "--store_root=/data", "--state_dir=/state"]
