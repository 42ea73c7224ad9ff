# The two entry points of README.md. Each installs what is missing, configures and builds first.
BUILD ?= build
FUZZ_BUILD ?= build-fuzz
JOBS ?= $(shell nproc)

# OpenBLAS falls back to its slow generic kernels on CPUs it does not recognise (VMs that report
# "Intel Xeon Processor"): AVX2 machines get Haswell's unless the environment chose already.
ifeq ($(OPENBLAS_CORETYPE),)
  ifneq ($(shell grep -m1 -o -w avx2 /proc/cpuinfo 2>/dev/null),)
    export OPENBLAS_CORETYPE := Haswell
  endif
endif

.PHONY: setup build run test docker-test fuzz bench calib-bench load-check stream-bench quality-table budget-table gguf-quality clean

setup:
	./scripts/setup.sh

build: setup
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j $(JOBS)

run: build
	./scripts/run_demo.sh $(BUILD)

# Every test, then each libFuzzer target for 30 s from its seed corpus (AddressSanitizer + UBSan), all nine
# at once: a bounded smoke run of every parser; `make fuzz` is the long run.
test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) --timeout 900
	./scripts/fuzz.sh $(FUZZ_BUILD) 30 9

# The container image built from a debootstrapped base and run as the restricted pod runs it
# (scripts/docker_test.sh); about 10 minutes on 2 cores, most of it compiling. Not part of `make test`.
docker-test: setup
	./scripts/setup.sh docker
	./scripts/docker_test.sh

# The fuzz targets for longer: FUZZ_SECONDS each (default 10 minutes).
FUZZ_SECONDS ?= 600
fuzz: setup
	./scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(JOBS)

bench: build
	./scripts/bench.sh $(BUILD)

calib-bench: build
	python3 scripts/calib_bench.py $(BUILD)

load-check: build
	./scripts/load_check.sh $(BUILD)

stream-bench: build
	python3 scripts/stream_bench.py $(BUILD)

quality-table: build
	python3 scripts/quality_table.py $(BUILD)

# The README's bit-budget table: allocations at 3..6 bits per weight against every uniform setting (~3 minutes).
budget-table: build
	python3 scripts/budget_table.py $(BUILD)

gguf-quality: build
	node scripts/gguf_quality.mjs $(BUILD)

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD)
