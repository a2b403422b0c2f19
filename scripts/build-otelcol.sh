#!/usr/bin/env bash
# Build the custom collector build/otelcol/otelcol-traceconsistency with the
# OpenTelemetry Collector Builder (ocb), from examples/builder-config.yaml.
#
# Assumes the Rust static library is already built (cargo build --release in
# the repo root): with the manifest's build tag tc_from_source the
# traceconsistency processor links it through cgo. (Without the tag it would link the
# prebuilt library of a release, which this source tree does not carry.)
# Safe to run again: ocb regenerates the sources, go reuses its build cache.
#
# Environment:
#   BUILDER_CONFIG  ocb manifest (default: examples/builder-config.yaml)
#                   (must keep dist.name/output_path, the binary is looked up there)
#   OCB_VERSION     ocb version to install if missing (default: v0.165.0)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# ocb resolves dist.output_path (./build/otelcol) against the current dir.
cd "$ROOT"

OCB_VERSION="${OCB_VERSION:-v0.165.0}"
BUILDER_CONFIG="${BUILDER_CONFIG:-examples/builder-config.yaml}"

command -v go >/dev/null || { echo "build-otelcol: go not found on PATH" >&2; exit 1; }

# GOPATH may be a list; go install puts binaries into the first entry's bin.
GOPATH_FIRST="$(go env GOPATH)"
GOPATH_FIRST="${GOPATH_FIRST%%:*}"
OCB_BIN="$GOPATH_FIRST/bin"
OCB="$OCB_BIN/builder"

ocb_version=""
if [[ -x "$OCB" ]]; then
  ocb_version="$("$OCB" version 2>&1 || true)"  # cobra prints to stderr
fi
if [[ "$ocb_version" != *"$OCB_VERSION"* ]]; then
  echo "build-otelcol: installing ocb $OCB_VERSION into $OCB_BIN"
  GOBIN="$OCB_BIN" go install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION"
fi

BIN="$ROOT/build/otelcol/otelcol-traceconsistency"
LIB="target/release/libtraceconsistency.a"

# Our processor (if enabled in the manifest) links a Rust static library via
# cgo: with the build tag tc_from_source (examples/builder-config.yaml sets it)
# $LIB built from this clone. Without the tag a manifest that replaces our
# module by this tree has no library to link. Fail early with a clear message
# instead of a long build error.
if grep -qE '^[[:space:]]*-[[:space:]]*gomod:[[:space:]]*github.com/traceconsistency/traceconsistency/traceconsistencyprocessor' "$BUILDER_CONFIG"; then
  [[ -f traceconsistencyprocessor/go.mod ]] || { echo "build-otelcol: traceconsistencyprocessor/go.mod missing (processor module)" >&2; exit 1; }
  if ! grep -qE '^[[:space:]]*build_tags:.*tc_from_source' "$BUILDER_CONFIG" && [[ "${GOFLAGS:-}" != *tc_from_source* ]]; then
    echo "build-otelcol: $BUILDER_CONFIG builds our processor without the tag tc_from_source; this source tree has no prebuilt library (release output, make release): set dist.build_tags: tc_from_source" >&2
    exit 1
  fi
  linked="$LIB"
  if [[ ! -f "$LIB" ]]; then
    echo "build-otelcol: $LIB missing; run 'cargo build --release' first" >&2
    exit 1
  fi
  # Go's build cache hashes the files inside a package's directory (the C
  # header traceconsistencyprocessor/internal/engine/traceconsistency.h included), not the files its
  # #cgo LDFLAGS name elsewhere: the static library is read only by the final
  # link, so drop the binary when the library is newer and go build links
  # again (~5 s) instead of silently keeping a stale binary.
  if [[ -e "$BIN" && "$linked" -nt "$BIN" ]]; then
    rm -f "$BIN"
  fi
fi

# ocb regenerates main.go/components.go/go.mod in build/otelcol on every run,
# then runs go mod tidy, go mod download and go build (-trimpath, -s -w).
start=$SECONDS
mkdir -p build  # ocb creates only the last path element of output_path
"$OCB" --config "$BUILDER_CONFIG"
[[ -x "$BIN" ]] || { echo "build-otelcol: ocb finished but $BIN is missing" >&2; exit 1; }
echo "build-otelcol: built in $((SECONDS - start))s: $BIN"
