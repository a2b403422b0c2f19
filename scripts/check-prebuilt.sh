#!/usr/bin/env bash
# Checks a release's library against the sources of this tree:
#   scripts/check-prebuilt.sh [LIB]   (make check-prebuilt; scripts/dist.sh runs it on what it ships)
# LIB (default build/release/v<Cargo.toml version>/lib/linux_amd64/libtraceconsistency.a) fails when
#   1. traceconsistencyprocessor/internal/engine/traceconsistency.h (the header the Go module
#      carries, so that it builds from the module cache) differs from include/traceconsistency.h;
#   2. LIB was not built from the current Rust sources: the hash it reports (tc_source_hash,
#      computed by build.rs) must equal the hash of the sources now (same recipe as build.rs,
#      with coreutils);
#   3. LIB carries debug information.
# Environment: SOURCE_HASH_OUT, a file to write the hash LIB reports into.
# Needs gcc (the check links a tiny C program against LIB); no Rust.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
version="v$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
PREBUILT="${1:-build/release/$version/lib/linux_amd64/libtraceconsistency.a}"
status=0

if ! cmp -s include/traceconsistency.h traceconsistencyprocessor/internal/engine/traceconsistency.h; then
  diff -u include/traceconsistency.h traceconsistencyprocessor/internal/engine/traceconsistency.h | head -20 >&2 || true
  echo "check-prebuilt: traceconsistencyprocessor/internal/engine/traceconsistency.h differs from include/traceconsistency.h; run 'make header'" >&2
  status=1
fi

# Keep in step with source_hash() in build.rs.
want="$({ find rust -type f -name '*.rs'; printf '%s\n' Cargo.toml Cargo.lock build.rs cbindgen.toml; } \
  | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum | cut -c1-64)"

if [[ ! -f "$PREBUILT" ]]; then
  echo "check-prebuilt: $PREBUILT is missing; 'make release VERSION=vX.Y.Z' builds a release" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/hash.c" <<'C'
#include <stdio.h>
const char *tc_source_hash(void);
int main(void) { const char *h = tc_source_hash(); puts(h ? h : "(null)"); return 0; }
C
if ! gcc -o "$tmp/hash" "$tmp/hash.c" "$PREBUILT" -lm -ldl -lpthread 2>"$tmp/err"; then
  cat "$tmp/err" >&2
  echo "check-prebuilt: $PREBUILT does not export tc_source_hash (built before it existed?)" >&2
  exit 1
fi
got="$("$tmp/hash")"
[[ -n "${SOURCE_HASH_OUT:-}" ]] && printf '%s\n' "$got" >"$SOURCE_HASH_OUT"
if [[ "$got" != "$want" ]]; then
  echo "check-prebuilt: $PREBUILT was built from other sources (source hash ${got:0:12}, sources now ${want:0:12}); build the release again from this tree" >&2
  status=1
fi

if objdump -h "$PREBUILT" | grep -qE '[[:space:]]\.debug_'; then
  echo "check-prebuilt: $PREBUILT carries debug information (strip --strip-debug)" >&2
  status=1
fi

if ((status == 0)); then
  echo "check-prebuilt: $PREBUILT ($(stat -c %s "$PREBUILT") bytes) is built from the current sources (${want:0:12}); header copy is current"
fi
exit $status
