# Build and runtime image for lowbit on Debian bookworm, the distribution its dependencies come from.
FROM debian:bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev \
      libopenblas-dev prometheus-cpp-dev libcurl4-openssl-dev libssl-dev nlohmann-json3-dev \
      libgtest-dev libgmock-dev libbenchmark-dev nodejs npm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cd tools && npm ci --no-audit --no-fund \
    && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release && cmake --build build

FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libopenblas0 libprometheus-cpp-core1.0 \
      libcurl4 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/build/lowbitd /src/build/lowbit /usr/local/bin/
USER 65534:65534
EXPOSE 50051 9464 50052
ENTRYPOINT ["/usr/local/bin/lowbitd"]
