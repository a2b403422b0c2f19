#!/usr/bin/env bash
# Release artifacts for one version: `make dist VERSION=vX.Y.Z` (or scripts/dist.sh vX.Y.Z [OUT]).
#
# Writes into OUT (default build/dist):
#   goproxy/                    a Go module proxy tree (GOPROXY=file://$OUT/goproxy reads it)
#                               with every module of ours a user's ocb manifest needs:
#                                 github.com/traceconsistency/traceconsistency/traceconsistencyprocessor@VERSION
#                                 github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/lib/linux_amd64@VERSION
#                               (serve it over HTTP, or copy it onto a module proxy/Athens)
#   lib/linux_amd64/libtraceconsistency.a   the library, stripped of debug information
#   include/traceconsistency.h              its header
#   SHA256SUMS                  checksums of all of the above
#
# The modules are packed from the working tree (files git tracks or would track; ignored
# files are left out). In the released processor module, go.mod requires the platform module
# at VERSION and has no replace.
#
# Environment:
#   DIST_LIB             library to ship (default: the committed prebuilt
#                        traceconsistencyprocessor/lib/linux_amd64/libtraceconsistency.a, which must then be current:
#                        scripts/check-prebuilt.sh runs first). scripts/test-module-cache.sh
#                        passes a freshly stripped target/release build here.
#   DIST_TIME            version time for the .info files (RFC 3339; default: HEAD's commit time)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VERSION="${1:-}"
OUT="${2:-build/dist}"
[[ "$VERSION" =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || {
  echo "dist: usage: scripts/dist.sh vX.Y.Z [OUT]  (make dist VERSION=vX.Y.Z); got '${VERSION}'" >&2
  exit 2
}
OUT="$(mkdir -p "$OUT" && cd "$OUT" && pwd)"

MOD=github.com/traceconsistency/traceconsistency/traceconsistencyprocessor
PLATFORMS=(linux_amd64)  # a module traceconsistencyprocessor/lib/<platform> each

if [[ -z "${DIST_LIB:-}" ]]; then
  bash scripts/check-prebuilt.sh
  DIST_LIB=traceconsistencyprocessor/lib/linux_amd64/libtraceconsistency.a
fi
[[ -f "$DIST_LIB" ]] || { echo "dist: $DIST_LIB missing" >&2; exit 1; }
if objdump -h "$DIST_LIB" | grep -qE '[[:space:]]\.debug_'; then
  echo "dist: $DIST_LIB carries debug information; strip it (strip --strip-debug)" >&2
  exit 1
fi
cmp -s include/traceconsistency.h traceconsistencyprocessor/internal/engine/traceconsistency.h || {
  echo "dist: traceconsistencyprocessor/internal/engine/traceconsistency.h differs from include/traceconsistency.h; run 'make header'" >&2
  exit 1
}
DIST_TIME="${DIST_TIME:-$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)}"

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

# Copies the files of the working tree under $1 (tracked, or untracked and not ignored; not
# deleted ones) into $stage, keeping their paths.
stage_files() {
  git ls-files -z --cached --others --exclude-standard -- "$1" \
    | while IFS= read -r -d '' f; do
        [[ -f "$f" ]] && printf '%s\0' "$f"
      done \
    | xargs -0 -r cp --parents -t "$stage"
}

stage_files traceconsistencyprocessor
# The platform modules are their own modules (modzip leaves nested modules out of the
# processor's zip anyway); ship DIST_LIB as the linux/amd64 library.
cp "$DIST_LIB" "$stage/traceconsistencyprocessor/lib/linux_amd64/libtraceconsistency.a"
for p in "${PLATFORMS[@]}"; do
  [[ -f "$stage/traceconsistencyprocessor/lib/$p/libtraceconsistency.a" ]] || { echo "dist: traceconsistencyprocessor/lib/$p has no library" >&2; exit 1; }
done
# The released go.mod: platform modules at this version, no replaces (a replace would be
# ignored in a dependency anyway; leaving it out keeps the .mod honest).
edits=()
for p in "${PLATFORMS[@]}"; do
  edits+=("-require=$MOD/lib/$p@$VERSION" "-dropreplace=$MOD/lib/$p")
done
(cd "$stage/traceconsistencyprocessor" && go mod edit "${edits[@]}")
if grep -q '^replace\|^[[:space:]]*=>' "$stage/traceconsistencyprocessor/go.mod"; then
  echo "dist: traceconsistencyprocessor/go.mod has replace directives a release cannot keep:" >&2
  grep -n 'replace\|=>' "$stage/traceconsistencyprocessor/go.mod" >&2
  exit 1
fi

modzip="$stage/modzip"
(cd scripts/modzip && GOFLAGS=-buildvcs=false go build -o "$modzip" .)
"$modzip" -dir "$stage/traceconsistencyprocessor" -version "$VERSION" -out "$OUT/goproxy" -time "$DIST_TIME"
for p in "${PLATFORMS[@]}"; do
  "$modzip" -dir "$stage/traceconsistencyprocessor/lib/$p" -version "$VERSION" -out "$OUT/goproxy" -time "$DIST_TIME"
done

mkdir -p "$OUT/lib/linux_amd64" "$OUT/include"
cp "$DIST_LIB" "$OUT/lib/linux_amd64/libtraceconsistency.a"
cp include/traceconsistency.h "$OUT/include/traceconsistency.h"
(cd "$OUT" && find lib include goproxy -type f ! -name list -print0 | LC_ALL=C sort -z | xargs -0 sha256sum >SHA256SUMS)

lib_zip="$OUT/goproxy/$MOD/lib/linux_amd64/@v/$VERSION.zip"
proc_zip="$OUT/goproxy/$MOD/@v/$VERSION.zip"
echo "dist: $VERSION in $OUT"
echo "dist: a linux/amd64 user downloads $(( ($(stat -c %s "$lib_zip") + $(stat -c %s "$proc_zip") + 1023) / 1024 )) KiB of our modules" \
  "(processor $(( $(stat -c %s "$proc_zip") / 1024 )) KiB, library $(( $(stat -c %s "$lib_zip") / 1024 )) KiB zipped," \
  "$(( $(stat -c %s "$DIST_LIB") / 1024 )) KiB unpacked)"
