#!/usr/bin/env bash
# Runs mdatagen on go/metadata.yaml and writes the generated files (documentation.md,
# generated_*_test.go, internal/metadata/generated_*.go, internal/metadatatest/) into the
# directory given as $1 (default: go/ itself).
#
# Why not plain `mdatagen metadata.yaml`: mdatagen names the Go package after the directory
# holding metadata.yaml, and this module lives in a directory called "go", which would give
# `package go`. So the module is copied to a temporary directory named after the package,
# generated there, and the generated files are copied back.
#
# Environment:
#   MDATAGEN          the mdatagen binary (default: $(go env GOPATH)/bin/mdatagen, installed
#                     there at MDATAGEN_VERSION when missing or of another version)
#   MDATAGEN_VERSION  default v0.159.0: the newest mdatagen the Go module proxy serves here
#                     (v0.160.0-v0.165.0 are refused); its output builds against collector
#                     v0.165.0 / v1.71.0. `go install ...@v0.159.0` fails on the proxy's
#                     missing version list, so it is built from a throwaway module.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$HERE}"
GOPATH_FIRST="$(go env GOPATH)"
MDATAGEN_VERSION="${MDATAGEN_VERSION:-v0.159.0}"
MDATAGEN="${MDATAGEN:-${GOPATH_FIRST%%:*}/bin/mdatagen}"
PKG=traceconsistencyprocessor

if [[ ! -x "$MDATAGEN" ]] || ! "$MDATAGEN" --version 2>/dev/null | grep -qF "$MDATAGEN_VERSION"; then
  echo "mdatagen.sh: installing mdatagen $MDATAGEN_VERSION as $MDATAGEN" >&2
  INSTALL="$(mktemp -d)"
  (
    cd "$INSTALL"
    go mod init mdatagen-install >/dev/null 2>&1
    printf '//go:build tools\n\npackage tools\n\nimport _ "go.opentelemetry.io/collector/cmd/mdatagen"\n' >tools.go
    GOFLAGS=-mod=mod GOPROXY="${GOPROXY:-https://proxy.golang.org}" \
      go get "go.opentelemetry.io/collector/cmd/mdatagen@$MDATAGEN_VERSION" >log 2>&1 ||
      { cat log >&2; exit 1; }
    mkdir -p "$(dirname "$MDATAGEN")"
    GOFLAGS=-mod=mod go build -o "$MDATAGEN" go.opentelemetry.io/collector/cmd/mdatagen
  )
  rm -rf "$INSTALL"
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
WORK="$TMP/$PKG"
mkdir -p "$WORK"
# The module without what mdatagen generates, so that stale generated files show up.
(cd "$HERE" && tar --exclude=./testdata --exclude=./tools -cf - .) | (cd "$WORK" && tar -xf -)
"$(dirname "${BASH_SOURCE[0]}")/generated-files.sh" "$WORK" | (cd "$WORK" && xargs -r rm -rf)

(cd "$WORK" && "$MDATAGEN" metadata.yaml)

mkdir -p "$OUT"
"$(dirname "${BASH_SOURCE[0]}")/generated-files.sh" "$WORK" | while read -r f; do
  rm -rf "${OUT:?}/$f"
  mkdir -p "$OUT/$(dirname "$f")"
  cp -R "$WORK/$f" "$OUT/$f"
done
