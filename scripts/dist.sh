#!/usr/bin/env bash
# What a release publishes, for one version: `make release VERSION=vX.Y.Z` (cargo build
# --release, then scripts/dist.sh vX.Y.Z build/release/vX.Y.Z), or scripts/dist.sh vX.Y.Z [OUT].
# The library exists only here: the source tree carries none.
#
# Writes into OUT (default build/release/VERSION):
#   goproxy/                    a Go module proxy tree (GOPROXY=file://$OUT/goproxy reads it)
#                               with every module of ours a user's ocb manifest needs:
#                                 github.com/traceconsistency/traceconsistency/traceconsistencyprocessor@VERSION
#                                 github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/lib/linux_amd64@VERSION
#                                   (with the library; its no_library.go left out)
#                               (serve it over HTTP, or copy it onto a module proxy/Athens)
#   lib/linux_amd64/libtraceconsistency.a   the library, stripped of debug information
#   include/traceconsistency.h              its header
#   SOURCE_HASH                 the hash of the Rust sources the library reports (tc_source_hash),
#                               checked against this tree's sources (scripts/check-prebuilt.sh)
#   SHA256SUMS                  checksums of all of the above
#
# The modules are packed from the working tree (files git tracks or would track; ignored
# files are left out). In the released processor module, go.mod requires the platform module
# at VERSION and has no replace.
#
# Environment:
#   DIST_LIB             library to ship (default: target/release/libtraceconsistency.a of
#                        this tree, stripped of debug information here). Whatever it is, it
#                        must report the source hash of this tree.
#   DIST_TIME            version time for the .info files (RFC 3339; default: HEAD's commit time)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VERSION="${1:-}"
OUT="${2:-build/release/$VERSION}"
[[ "$VERSION" =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || {
  echo "dist: usage: scripts/dist.sh vX.Y.Z [OUT]  (make dist VERSION=vX.Y.Z); got '${VERSION}'" >&2
  exit 2
}
OUT="$(mkdir -p "$OUT" && cd "$OUT" && pwd)"

MOD=github.com/traceconsistency/traceconsistency/traceconsistencyprocessor
PLATFORMS=(linux_amd64)  # a module traceconsistencyprocessor/lib/<platform> each

mkdir -p "$OUT/lib/linux_amd64" "$OUT/include"
if [[ -z "${DIST_LIB:-}" ]]; then
  [[ -f target/release/libtraceconsistency.a ]] || { echo "dist: target/release/libtraceconsistency.a missing; run 'cargo build --release --locked' (make release does)" >&2; exit 1; }
  strip --strip-debug -o "$OUT/lib/linux_amd64/libtraceconsistency.a" target/release/libtraceconsistency.a
else
  [[ -f "$DIST_LIB" ]] || { echo "dist: $DIST_LIB missing" >&2; exit 1; }
  cp "$DIST_LIB" "$OUT/lib/linux_amd64/libtraceconsistency.a"
fi
DIST_LIB="$OUT/lib/linux_amd64/libtraceconsistency.a"
# The library must come from these sources, stripped, with the Go module's header copy current.
SOURCE_HASH_OUT="$OUT/SOURCE_HASH" bash scripts/check-prebuilt.sh "$DIST_LIB" >/dev/null
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
# Each module carries the repository's license.
cp LICENSE "$stage/traceconsistencyprocessor/LICENSE"
for p in "${PLATFORMS[@]}"; do cp LICENSE "$stage/traceconsistencyprocessor/lib/$p/LICENSE"; done
# The platform modules are their own modules (modzip leaves nested modules out of the
# processor's zip anyway); ship DIST_LIB as the linux/amd64 library, without the file that
# makes a build of the source tree without tc_from_source fail.
cp "$DIST_LIB" "$stage/traceconsistencyprocessor/lib/linux_amd64/libtraceconsistency.a"
for p in "${PLATFORMS[@]}"; do
  [[ -f "$stage/traceconsistencyprocessor/lib/$p/libtraceconsistency.a" ]] || { echo "dist: traceconsistencyprocessor/lib/$p has no library" >&2; exit 1; }
  rm -f "$stage/traceconsistencyprocessor/lib/$p/no_library.go"
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

cp include/traceconsistency.h "$OUT/include/traceconsistency.h"
(cd "$OUT" && { find lib include goproxy -type f ! -name list -print0; printf 'SOURCE_HASH\0'; } \
  | LC_ALL=C sort -z | xargs -0 sha256sum >SHA256SUMS)

lib_zip="$OUT/goproxy/$MOD/lib/linux_amd64/@v/$VERSION.zip"
proc_zip="$OUT/goproxy/$MOD/@v/$VERSION.zip"
echo "dist: $VERSION in $OUT (library built from sources $(cut -c1-12 "$OUT/SOURCE_HASH"), sha256 $(sha256sum <"$DIST_LIB" | cut -c1-12))"
echo "dist: a linux/amd64 user downloads $(( ($(stat -c %s "$lib_zip") + $(stat -c %s "$proc_zip") + 1023) / 1024 )) KiB of our modules" \
  "(processor $(( $(stat -c %s "$proc_zip") / 1024 )) KiB, library $(( $(stat -c %s "$lib_zip") / 1024 )) KiB zipped," \
  "$(( $(stat -c %s "$DIST_LIB") / 1024 )) KiB unpacked)"
