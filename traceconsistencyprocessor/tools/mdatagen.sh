#!/usr/bin/env bash
# Runs mdatagen in place on each component's metadata.yaml: the processor's
# (traceconsistencyprocessor/metadata.yaml) and the connector's
# (traceconsistencyprocessor/traceconsistencyconnector/metadata.yaml). Each folder is named
# after its Go package, so mdatagen's output (documentation.md, generated_*_test.go,
# internal/metadata/generated_*.go, internal/metadatatest/) lands where it belongs, as in
# contrib.
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
GOPATH_FIRST="$(go env GOPATH)"
MDATAGEN_VERSION="${MDATAGEN_VERSION:-v0.159.0}"
MDATAGEN="${MDATAGEN:-${GOPATH_FIRST%%:*}/bin/mdatagen}"

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

# The component folders, relative to the module (also used by check-generated.sh).
# What mdatagen made before is removed first, so that a file it no longer makes goes too.
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
for dir in $("$TOOLS/components.sh"); do
  "$TOOLS/generated-files.sh" "$HERE/$dir" | (cd "$HERE/$dir" && xargs -r rm -rf)
  (cd "$HERE/$dir" && "$MDATAGEN" metadata.yaml)
done
