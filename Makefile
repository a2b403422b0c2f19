# traceconsistency — build, run and test everything from a fresh clone.
#
#   make run    build the Rust library and the custom collector, start it on examples/collector.yaml
#   make test   every test: Rust, header drift, C ABI under valgrind, Go (-race), generated-code
#               drift, a user's ocb build from a module tree packed from the current sources
#               (with the library checked against them), end to end against the built collector,
#               the benchmarks' dry path
#   make bench  benchmarks (not part of make test); results go in BENCHMARKS.md
#   make release VERSION=vX.Y.Z  what a release publishes, in build/release/VERSION (module
#               proxy tree with the prebuilt library, the library, its SHA-256, the source hash
#               it reports, the header); the source tree itself carries no library

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
CARGO ?= cargo
GOBIN := $(shell $(GO) env GOPATH)/bin
LIB := target/release/libtraceconsistency.a
OTELCOL := build/otelcol/otelcol-traceconsistency
RUST_SRCS := $(shell find rust -name '*.rs') Cargo.toml Cargo.lock build.rs cbindgen.toml
# What the Go module ships: the header (so it builds from the module cache; committed) and,
# per platform, the prebuilt library in a module of its own (release output only: make release).
GO_HEADER := traceconsistencyprocessor/internal/engine/traceconsistency.h
VERSION ?= v$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

# In this repository every Go build (go test, ocb via examples/builder-config.yaml, tests/)
# links the library built from source here, target/release/libtraceconsistency.a, through the
# build tag tc_from_source. Without the tag the Go module links the prebuilt library of its
# platform module, which only a release carries (what users get from the module cache,
# proven by test-module-cache); in this tree such a build stops with
# traceconsistency_source_tree_has_no_prebuilt_library_build_with_tag_tc_from_source_...
# (traceconsistencyprocessor/lib/linux_amd64/no_library.go).
export GOFLAGS := $(strip $(shell $(GO) env GOFLAGS) -tags=tc_from_source)

.PHONY: all lib header vocab check-prebuilt release test-module-cache otelcol run test test-rust test-c test-go check-generated test-observability test-e2e bench bench-engine bench-processor bench-collector bench-collector-pooling bench-collector-wait bench-tailsampling bench-dry soak clean fuzz fuzz-smoke fuzz-tools realapps-deps test-realapps realapps-report

all: otelcol

$(LIB): $(RUST_SRCS)
	$(CARGO) build --release --locked
	@touch $(LIB)

lib: $(LIB)

## header: regenerate include/traceconsistency.h from the crate (cbindgen) and the Go module's
## copy of it, $(GO_HEADER) (commit both)
header: $(LIB)
	cp "$$(ls -t $$(find target/release/build -name traceconsistency.h) | head -1)" include/traceconsistency.h
	cp include/traceconsistency.h $(GO_HEADER)

## vocab: regenerate the Go side of the crate's vocabulary (rust/vocab: config knobs and
## defaults, enums and their YAML strings, result codes, release reasons, finding kinds,
## stats) into traceconsistencyprocessor/internal/engine/vocab*_generated.go, and the YAML side of the engine's knobs
## into traceconsistencyprocessor/config_knobs_generated.go (commit them; `cargo test` fails when
## they are stale)
vocab:
	TC_WRITE_VOCAB=1 $(CARGO) test --locked --lib vocab::go::go_vocabulary_is_up_to_date

## release: what a release of VERSION (default: v<Cargo.toml version>) publishes, in
## build/release/VERSION: the Go module proxy tree (goproxy/: the processor module and the
## linux/amd64 library module with the library), the library stripped of debug information,
## the header, SOURCE_HASH (the source hash the library reports) and SHA256SUMS. Runs cargo
## unconditionally (a no-op when up to date): file times can hide a source change from make.
## Publish goproxy/ on a module proxy; nothing of it is committed.
release:
	$(CARGO) build --release --locked
	bash scripts/dist.sh $(VERSION) build/release/$(VERSION)

## A release's library (default: that of build/release/VERSION; RELEASE_LIB=... for another)
## and the header copy against the current sources. scripts/dist.sh runs the same check on
## what it ships, so test-module-cache covers it in make test.
RELEASE_LIB ?= build/release/$(VERSION)/lib/linux_amd64/libtraceconsistency.a
check-prebuilt:
	bash scripts/check-prebuilt.sh $(RELEASE_LIB)

## A collector built by ocb from a module proxy tree packed from the current sources (the
## library: target/release, stripped), without Rust, clone or replaces; first, that the source
## tree refuses a build without tc_from_source with a clear message.
test-module-cache: $(LIB)
	bash scripts/test-module-cache.sh

otelcol: $(LIB)
	bash scripts/build-otelcol.sh

run: otelcol
	mkdir -p build
	./$(OTELCOL) --config examples/collector.yaml

test: fuzz-smoke test-rust test-c test-go check-generated test-module-cache test-observability test-e2e bench-dry test-realapps
	@echo "make test: all suites passed"

## Rust unit and property tests; includes the header drift check (header_is_up_to_date).
test-rust:
	$(CARGO) test --locked

## The C ABI from C, under valgrind and under AddressSanitizer + UndefinedBehaviorSanitizer
## (leaks, invalid accesses and undefined behaviour fail the run). Installs valgrind when missing.
test-c: $(LIB)
	mkdir -p build
	command -v valgrind >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind; }
	gcc -std=c11 -Wall -Wextra -Werror -g -Iinclude tests/c/abi_test.c $(LIB) -lm -ldl -lpthread -o build/abi_test
	valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect ./build/abi_test
	gcc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
	  -Iinclude tests/c/abi_test.c $(LIB) -lm -ldl -lpthread -o build/abi_test_asan
	ASAN_OPTIONS=detect_leaks=1 ./build/abi_test_asan

test-go: $(LIB)
	cd traceconsistencyprocessor && CGO_ENABLED=1 $(GO) test -race -count=1 ./...
	cd traceconsistencyprocessor && CGO_ENABLED=0 $(GO) build ./...

## mdatagen output committed in traceconsistencyprocessor/ must match what mdatagen generates now.
check-generated:
	bash traceconsistencyprocessor/tools/check-generated.sh

## Prometheus rules and Grafana dashboard (examples/observability): promtool check and unit
## tests, threshold mutations, scrape config, metric names against traceconsistencyprocessor/metadata.yaml.
## Installs Debian's prometheus package (promtool, and prometheus for the end-to-end test in
## tests/e2e/observability_test.go, run by test-e2e) when either is missing.
test-observability:
	command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }
	cd examples/observability && promtool check config prometheus.yaml
	cd examples/observability && promtool check rules rules.yaml
	cd examples/observability && promtool test rules rules_test.yaml
	python3 examples/observability/test_threshold_mutations.py
	python3 examples/observability/check_metric_names.py

## Coverage-guided fuzzing (fuzz/, cargo-fuzz + libFuzzer, nightly only; see FUZZING.md).
## `make fuzz` runs every target FUZZ_SECONDS (default 60) on its committed seeds
## (fuzz/corpus/<t>) plus a growing work corpus (fuzz/work/<t>, not committed); any crash,
## leak, timeout (one input over 1 s) or RSS over 2 GB fails it. `make fuzz-smoke` (part of
## make test) runs every committed seed of each target once (libFuzzer -runs=0: deterministic, no mutation), so the targets keep building and the seeds keep passing.
## A missing nightly toolchain or cargo-fuzz is installed; if that fails, so does the target.
FUZZ_TARGETS := ingest_abi validate_vs_prost structured config_abi hlc_state wal_replay
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -timeout=1 -rss_limit_mb=2048 -dict=otlp.dict

fuzz-tools:
	@rustup run nightly rustc --version >/dev/null 2>&1 || { \
	  echo "fuzz: installing the nightly toolchain (rustup toolchain install nightly --profile minimal)"; \
	  rustup toolchain install nightly --profile minimal || { echo "fuzz: FAILED to install the nightly Rust toolchain; fuzzing needs it" >&2; exit 1; }; }
	@$(CARGO) fuzz --version >/dev/null 2>&1 || { \
	  echo "fuzz: installing cargo-fuzz"; \
	  $(CARGO) install cargo-fuzz --locked || { echo "fuzz: FAILED to install cargo-fuzz" >&2; exit 1; }; }

fuzz: fuzz-tools
	cd fuzz && cargo +nightly fuzz build
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p work/$$t && echo "== fuzz $$t for $(FUZZ_SECONDS) s" && \
	  cargo +nightly fuzz run $$t work/$$t corpus/$$t -- $(FUZZ_FLAGS) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    2>&1 | tee work/$$t.log | grep -E '^(#[0-9]+ +DONE|Done|stat::|==[0-9]+==|SUMMARY|thread)' \
	    || { echo "fuzz: $$t FAILED (log: fuzz/work/$$t.log, input: fuzz/artifacts/$$t/)" >&2; exit 1; }; \
	done

fuzz-smoke: fuzz-tools
	cd fuzz && cargo +nightly fuzz build
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  rm -rf work/smoke-$$t && mkdir -p work/smoke-$$t && echo "== fuzz-smoke $$t" && \
	  cargo +nightly fuzz run $$t work/smoke-$$t corpus/$$t -- $(FUZZ_FLAGS) -runs=0 \
	    >work/smoke-$$t.log 2>&1 || { tail -40 work/smoke-$$t.log; echo "fuzz-smoke: $$t FAILED" >&2; exit 1; }; \
	done

test-e2e: otelcol
	cd tests && $(GO) vet ./... && E2E_REQUIRED=1 OTELCOL_BIN=$(CURDIR)/$(OTELCOL) $(GO) test -count=1 -race -timeout 20m ./...

## The long soak of "acknowledged means delivered" (tests/e2e/soak_test.go; its short
## schedule runs in test-e2e): TC_SOAK_DURATION of backend outages, SIGTERMs and kill -9s.
TC_SOAK_DURATION ?= 10m
soak: otelcol
	cd tests && E2E_REQUIRED=1 OTELCOL_BIN=$(CURDIR)/$(OTELCOL) TC_SOAK_DURATION=$(TC_SOAK_DURATION) \
	  $(GO) test -count=1 -race -timeout 6h -v -run '^TestSoakAcknowledgedMeansDelivered$$' ./e2e/

## Real auto-instrumented applications (tests/realapps, driven by tests/e2e/realapps_test.go):
## a Python Flask frontend under opentelemetry-instrument, a Node.js Express service with
## auto-instrumentations-node, a Java service under the opentelemetry-javaagent, a Go service
## with otelhttp + otlptracehttp; pinned in tests/realapps/{python/requirements.txt,
## node/package-lock.json, go.mod of tests/} and REALAPPS_JAVAAGENT below; installed into
## build/realapps. faketime (Debian) runs one service with its clock 300 ms ahead.
REALAPPS := build/realapps
REALAPPS_JAVAAGENT := io.opentelemetry.javaagent:opentelemetry-javaagent:2.31.0
realapps-deps:
	command -v faketime >/dev/null && command -v mvn >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends faketime maven; }
	mkdir -p $(REALAPPS)/node $(REALAPPS)/java/classes
	cmp -s tests/realapps/python/requirements.txt $(REALAPPS)/py/requirements.txt || { \
	  rm -rf $(REALAPPS)/py && python3 -m venv $(REALAPPS)/py && \
	  $(REALAPPS)/py/bin/pip install --quiet --disable-pip-version-check -r tests/realapps/python/requirements.txt && \
	  cp tests/realapps/python/requirements.txt $(REALAPPS)/py/requirements.txt; }
	cmp -s tests/realapps/node/package-lock.json $(REALAPPS)/node/package-lock.json || { \
	  cp tests/realapps/node/package.json tests/realapps/node/package-lock.json $(REALAPPS)/node/ && \
	  cd $(REALAPPS)/node && npm ci --no-audit --no-fund --loglevel=error; }
	test -s $(REALAPPS)/java/opentelemetry-javaagent.jar || { \
	  mvn -q dependency:copy -Dartifact=$(REALAPPS_JAVAAGENT) -DoutputDirectory=$(CURDIR)/$(REALAPPS)/java/dl && \
	  mv $(REALAPPS)/java/dl/opentelemetry-javaagent-*.jar $(REALAPPS)/java/opentelemetry-javaagent.jar; }
	javac -d $(REALAPPS)/java/classes tests/realapps/java/App.java
	cd tests && $(GO) build -o $(CURDIR)/$(REALAPPS)/goservice ./realapps/goservice

## The short run of the real applications (part of make test): asserts the completeness and
## findings targets. REALAPPS_REPORT_ONLY=1 reports without failing on them.
test-realapps: otelcol realapps-deps
	cd tests && REALAPPS_DIR=$(CURDIR)/$(REALAPPS) E2E_REQUIRED=1 OTELCOL_BIN=$(CURDIR)/$(OTELCOL) \
	  $(GO) test -count=1 -timeout 15m -v -run '^TestRealApps$$' ./e2e/

## The long run (>= 2,000 traces, both delays, every anomaly), reporting only; prints the
## table and writes build/realapps/report/summary.json.
realapps-report: otelcol realapps-deps
	cd tests && REALAPPS_DIR=$(CURDIR)/$(REALAPPS) REALAPPS_LONG=1 REALAPPS_REPORT_ONLY=1 E2E_REQUIRED=1 \
	  OTELCOL_BIN=$(CURDIR)/$(OTELCOL) $(GO) test -count=1 -timeout 60m -v -run '^TestRealApps$$' ./e2e/

bench: bench-engine bench-processor bench-collector bench-collector-pooling bench-collector-wait bench-tailsampling

bench-engine:
	$(CARGO) bench --locked --bench engine

## Each throughput row runs max(5 s, 20 waits) of ingest, 3 times interleaved (TC_BENCH_RUNS);
## b.N is not used (-benchtime 1x).
bench-processor: $(LIB)
	cd tests && $(GO) test -run '^$$' -bench . -benchmem -benchtime 1x -timeout 60m ./bench/...

## Replay load (the collector, not the load source, is the bottleneck), pinned, 3 runs a row.
bench-collector: otelcol
	REPEAT=3 LOADERS=replay bash scripts/bench-collector.sh

## The same with the collector's pdata.useProtoPooling feature gate (alpha, off by default).
bench-collector-pooling: otelcol
	REPEAT=3 LOADERS=replay FEATURE_GATES=pdata.useProtoPooling bash scripts/bench-collector.sh

## Waited-for sends (sending_queue.wait_for_result, the README's safe exporter) against the
## exporter's default in-memory queue, both with the write-ahead log, to a backend collector.
bench-collector-wait: otelcol
	REPEAT=3 LOADERS=replay CONFIGS="ours-otlp-queue ours-otlp-wait" bash scripts/bench-collector.sh

## tail_sampling alone (decision_wait 30s) vs groupbytrace -> tail_sampling vs
## traceconsistency -> tail_sampling (decision_wait 1s), saturation and a fixed load.
bench-tailsampling: otelcol
	bash scripts/bench-tailsampling.sh

## The collector benchmarks' dry path (part of make test; measures nothing): their shared setup
## (scripts/bench-common.sh), the load sources built, every configuration they run validated
## by the collector, nothing started.
bench-dry: otelcol
	DRY_RUN=1 CONFIGS="none groupbytrace ours ours-wal-batch ours-wal-interval ours-otlp-queue ours-otlp-wait" bash scripts/bench-collector.sh
	DRY_RUN=1 bash scripts/bench-tailsampling.sh

clean:
	rm -rf target build
