# traceconsistency — build, run and test everything from a fresh clone.
#
#   make run    build the Rust library and the custom collector, start it on examples/collector.yaml
#   make test   every test: Rust, header drift, C ABI under valgrind, Go (-race), generated-code
#               drift, end to end against the built collector
#   make bench  benchmarks (not part of make test); results go in BENCHMARKS.md

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
GO ?= go
CARGO ?= cargo
GOBIN := $(shell $(GO) env GOPATH)/bin
LIB := target/release/libtraceconsistency.a
OTELCOL := build/otelcol/otelcol-traceconsistency
RUST_SRCS := $(shell find rust -name '*.rs') Cargo.toml Cargo.lock build.rs cbindgen.toml

.PHONY: all lib header otelcol run test test-rust test-c test-go check-generated test-e2e bench bench-engine bench-processor bench-collector clean

all: otelcol

$(LIB): $(RUST_SRCS)
	$(CARGO) build --release --locked
	@touch $(LIB)

lib: $(LIB)

## header: regenerate include/traceconsistency.h from rust/ffi.rs (commit the result)
header: $(LIB)
	cp "$$(ls -t $$(find target/release/build -name traceconsistency.h) | head -1)" include/traceconsistency.h

otelcol: $(LIB)
	bash scripts/build-otelcol.sh

run: otelcol
	mkdir -p build
	./$(OTELCOL) --config examples/collector.yaml

test: test-rust test-c test-go check-generated test-observability test-e2e
	@echo "make test: all suites passed"

## Rust unit and property tests; includes the header drift check (header_is_up_to_date).
test-rust:
	$(CARGO) test --locked

## The C ABI from C, under valgrind (leaks and invalid accesses fail the run).
test-c: $(LIB)
	mkdir -p build
	gcc -std=c11 -Wall -Wextra -Werror -g -Iinclude tests/c/abi_test.c $(LIB) -lm -ldl -lpthread -o build/abi_test
	if command -v valgrind >/dev/null; then \
	  valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect ./build/abi_test; \
	else \
	  echo "valgrind not found: running without it"; ./build/abi_test; \
	fi

test-go: $(LIB)
	cd go && CGO_ENABLED=1 $(GO) test -race -count=1 ./...
	cd go && CGO_ENABLED=0 $(GO) build ./...

## mdatagen output committed in go/ must match what mdatagen generates now.
check-generated:
	bash go/tools/check-generated.sh

## Prometheus rules and Grafana dashboard (examples/observability): promtool check and unit
## tests, threshold mutations, scrape config, metric names against go/metadata.yaml.
## Installs Debian's prometheus package (promtool) when promtool is missing.
test-observability:
	command -v promtool >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus; }
	cd examples/observability && promtool check config prometheus.yaml
	cd examples/observability && promtool check rules rules.yaml
	cd examples/observability && promtool test rules rules_test.yaml
	python3 examples/observability/test_threshold_mutations.py
	python3 examples/observability/check_metric_names.py

test-e2e: otelcol
	cd tests && $(GO) vet ./... && E2E_REQUIRED=1 OTELCOL_BIN=$(CURDIR)/$(OTELCOL) $(GO) test -count=1 -race -timeout 20m ./...

bench: bench-engine bench-processor bench-collector

bench-engine:
	$(CARGO) bench --locked --bench engine

bench-processor: $(LIB)
	cd tests && $(GO) test -run '^$$' -bench . -benchmem -benchtime 3s ./bench/...

bench-collector: otelcol
	bash scripts/bench-collector.sh

clean:
	rm -rf target build
