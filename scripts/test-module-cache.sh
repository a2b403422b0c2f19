#!/usr/bin/env bash
# End-to-end test of "add it to your own collector with one line of the ocb manifest, no
# Rust toolchain" (part of `make test`, target test-module-cache):
#
#   1. scripts/dist.sh packs our modules into a module proxy tree on disk, shipping the
#      library built from the current sources (target/release, stripped) as the linux/amd64
#      prebuilt one;
#   2. in a temporary directory outside the repository, with cargo and rustc removed from
#      PATH, ocb builds a manifest of its own (otlp receiver, our processor by version with no
#      replaces, debug exporter) against GOPROXY=file://<tree>,<the usual proxy>, the
#      checksum database off for our modules only;
#   3. the collector must list traceconsistency among its components and pass `validate` on
#      a config that uses it in a traces pipeline, and must carry our modules from the proxy
#      tree, not from a replace.
# Before that it checks that the source tree, which carries no library, refuses a build
# without the tag tc_from_source with the message of lib/linux_amd64/no_library.go.
#
# The version is v0.0.0-modcache.h<hash of what is packed>: the module cache never replaces a
# version it holds, so a fixed version would keep testing the first content it saw. The
# versions this test put into the module cache are removed again at the end.
#
# Needs: target/release/libtraceconsistency.a (make lib), go, gcc; network or a warm module
# cache for the collector's other modules. Installs ocb like scripts/build-otelcol.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OCB_VERSION="${OCB_VERSION:-v0.165.0}"
LIB=target/release/libtraceconsistency.a
MOD=github.com/traceconsistency/traceconsistency/traceconsistencyprocessor
# Collector modules of the test manifest: the versions our module is built against
# (examples/builder-config.yaml, examples/VERSIONS.md).
CORE=v0.165.0
STABLE=v1.71.0

[[ -f "$LIB" ]] || { echo "test-module-cache: $LIB missing; run 'make lib'" >&2; exit 1; }
start=$SECONDS
TMP="$(mktemp -d /tmp/tc-module-cache.XXXXXX)"
GOMODCACHE_DIR="$(go env GOMODCACHE)"
cleanup() {
  # Our test versions in the module cache (read-only files, hence the chmod).
  local d
  for d in "$GOMODCACHE_DIR/$MOD@v0.0.0-modcache."* "$GOMODCACHE_DIR/$MOD/lib/"*"@v0.0.0-modcache."* \
    "$GOMODCACHE_DIR/cache/download/$MOD/@v/v0.0.0-modcache."* "$GOMODCACHE_DIR/cache/download/$MOD/lib/"*"/@v/v0.0.0-modcache."*; do
    [[ -e "$d" ]] || continue
    chmod -R u+w "$d" 2>/dev/null || true
    rm -rf "$d"
  done
  # The version lists the go command kept for our modules name those versions too.
  rm -f "$GOMODCACHE_DIR/cache/download/$MOD/@v/list" "$GOMODCACHE_DIR/cache/download/$MOD/lib/"*/@v/list
  for d in "$GOMODCACHE_DIR/github.com/traceconsistency" "$GOMODCACHE_DIR/cache/download/github.com/traceconsistency"; do
    [[ -d "$d" ]] && find "$d" -depth -type d -empty -delete
  done
  if [[ "${KEEP_TMP:-}" == 1 ]]; then echo "test-module-cache: kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

fail() { echo "test-module-cache: $*" >&2; exit 1; }

# 0. No library in the source tree: without tc_from_source the build stops with a clear message.
if out="$(cd traceconsistencyprocessor && env GOFLAGS= CGO_ENABLED=1 go build ./... 2>&1)"; then
  fail "the source tree built without the tag tc_from_source (is a library committed in traceconsistencyprocessor/lib?)"
fi
grep -q 'traceconsistency_source_tree_has_no_prebuilt_library_build_with_tag_tc_from_source' <<<"$out" \
  || { echo "$out" >&2; fail "a build of the source tree without tc_from_source fails, but not with the message of lib/linux_amd64/no_library.go"; }

# 1. The proxy tree.
strip --strip-debug -o "$TMP/libtraceconsistency.a" "$LIB"
content="$({ git ls-files -z --cached --others --exclude-standard -- traceconsistencyprocessor \
  | while IFS= read -r -d '' f; do [[ -f "$f" && "$f" != *.a ]] && printf '%s\0' "$f"; done \
  | xargs -0 sha256sum; sha256sum <"$TMP/libtraceconsistency.a"; } | sha256sum | cut -c1-12)"
VERSION="v0.0.0-modcache.h$content"
DIST_LIB="$TMP/libtraceconsistency.a" bash scripts/dist.sh "$VERSION" "$TMP/dist"

# 2. A user's build: no Rust, no clone, no replaces.
GOPATH_FIRST="$(go env GOPATH)"
GOPATH_FIRST="${GOPATH_FIRST%%:*}"
OCB="$GOPATH_FIRST/bin/builder"
if [[ ! -x "$OCB" || "$("$OCB" version 2>&1 || true)" != *"$OCB_VERSION"* ]]; then
  echo "test-module-cache: installing ocb $OCB_VERSION"
  GOBIN="$GOPATH_FIRST/bin" go install "go.opentelemetry.io/collector/cmd/builder@$OCB_VERSION"
fi

user="$TMP/user"
mkdir -p "$user"
cat >"$user/builder.yaml" <<EOF
dist:
  module: example.com/mycollector
  name: mycollector
  description: A user's collector with the traceconsistency processor
  output_path: ./out
  cgo_enabled: true
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $CORE
processors:
  - gomod: $MOD $VERSION
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/debugexporter $CORE
providers:
  - gomod: go.opentelemetry.io/collector/confmap/provider/envprovider $STABLE
  - gomod: go.opentelemetry.io/collector/confmap/provider/fileprovider $STABLE
  - gomod: go.opentelemetry.io/collector/confmap/provider/yamlprovider $STABLE
EOF
cat >"$user/config.yaml" <<'EOF'
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:4317
processors:
  traceconsistency:
    quiet_period: 1s
    idle_timeout: 10s
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [traceconsistency]
      exporters: [debug]
EOF

# PATH without any directory that holds cargo or rustc.
clean_path=""
IFS=: read -r -a dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [[ -z "$d" || -e "$d/cargo" || -e "$d/rustc" ]] && continue
  clean_path="${clean_path:+$clean_path:}$d"
done
usual_proxy="$(go env GOPROXY)"
[[ "$usual_proxy" == off || -z "$usual_proxy" ]] && usual_proxy=https://proxy.golang.org,direct
user_env=(
  env -u GOWORK -u CARGO -u CARGO_HOME -u RUSTUP_HOME
  PATH="$clean_path"
  GOWORK=off
  CGO_ENABLED=1
  GOFLAGS=-mod=mod
  GOPROXY="file://$TMP/dist/goproxy,$usual_proxy"
  GONOSUMDB=github.com/traceconsistency
)
if "${user_env[@]}" bash -c 'command -v cargo || command -v rustc' >/dev/null; then
  echo "test-module-cache: could not hide the Rust toolchain from PATH" >&2
  exit 1
fi
build_start=$SECONDS
(cd "$user" && "${user_env[@]}" "$OCB" --config builder.yaml >"$TMP/ocb.log" 2>&1) || {
  tail -40 "$TMP/ocb.log" >&2
  echo "test-module-cache: ocb failed to build the user's collector from the module proxy tree" >&2
  exit 1
}
BIN="$user/out/mycollector"
echo "test-module-cache: ocb built the user's collector in $((SECONDS - build_start))s"

# 3. What the user gets.
mods="$(go version -m "$BIN")"
grep -qE "^[[:space:]]+dep[[:space:]]+$MOD[[:space:]]+$VERSION([[:space:]]|$)" <<<"$mods" \
  || fail "the collector does not carry $MOD $VERSION: $(grep traceconsistency <<<"$mods")"
if grep -q '=>' <<<"$(grep traceconsistency <<<"$mods")"; then
  fail "the collector's traceconsistency modules come from a replace"
fi
if grep -q "$MOD/lib/linux_amd64" "$user/out/go.mod"; then :; else
  fail "the generated go.mod does not require the linux/amd64 platform module"
fi
(cd "$user" && "${user_env[@]}" "$BIN" components >"$TMP/components.txt" 2>&1) || { cat "$TMP/components.txt" >&2; fail "components failed"; }
grep -qE '^[[:space:]]*-?[[:space:]]*name:[[:space:]]*traceconsistency$' "$TMP/components.txt" \
  || { cat "$TMP/components.txt" >&2; fail "traceconsistency is not among the collector's components"; }
(cd "$user" && "${user_env[@]}" "$BIN" validate --config config.yaml >"$TMP/validate.txt" 2>&1) \
  || { cat "$TMP/validate.txt" >&2; fail "validate failed on a config using traceconsistency"; }
# A bad value must be refused with a message naming the key (the check runs in the linked library).
sed 's/quiet_period: 1s/quiet_period: -1s/' "$user/config.yaml" >"$user/bad.yaml"
if (cd "$user" && "${user_env[@]}" "$BIN" validate --config bad.yaml >"$TMP/bad.txt" 2>&1); then
  fail "validate accepted quiet_period: -1s"
fi
grep -q 'quiet_period' "$TMP/bad.txt" || { cat "$TMP/bad.txt" >&2; fail "the refusal of quiet_period: -1s does not name the key"; }

echo "test-module-cache: OK in $((SECONDS - start))s: $MOD $VERSION from a file:// module proxy," \
  "built by ocb with no Rust toolchain and no replaces; components lists traceconsistency, validate passes" \
  "(collector $(( $(stat -c %s "$BIN") / 1024 / 1024 )) MiB)"
