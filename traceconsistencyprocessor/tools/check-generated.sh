#!/usr/bin/env bash
# Fails (exit 1) when the committed mdatagen output of a component (see components.sh)
# differs from what mdatagen makes of its metadata.yaml now. mdatagen runs in place
# (mdatagen.sh); the files found before are kept aside and put back afterwards, so the
# working tree ends as it was.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TMP="$(mktemp -d)"
# $TMP/{before,fresh}/<n>: the generated files of the n-th component folder.
key() { "$TOOLS/components.sh" | grep -nxF "$1" | cut -d: -f1; }

# Keep aside what is there now: per component, its generated files.
for dir in $("$TOOLS/components.sh"); do
  mkdir -p "$TMP/before/$(key "$dir")" "$TMP/fresh/$(key "$dir")"
  "$TOOLS/generated-files.sh" "$HERE/$dir" | (cd "$HERE/$dir" && xargs -r cp -R --parents -t "$TMP/before/$(key "$dir")")
done
restore() {
  for dir in $("$TOOLS/components.sh"); do
    "$TOOLS/generated-files.sh" "$HERE/$dir" | (cd "$HERE/$dir" && xargs -r rm -rf)
    (cd "$TMP/before/$(key "$dir")" && cp -R . "$HERE/$dir/")
  done
  rm -rf "$TMP"
}
trap restore EXIT

"$TOOLS/mdatagen.sh"

: >"$TMP/drift"
for dir in $("$TOOLS/components.sh"); do
  "$TOOLS/generated-files.sh" "$HERE/$dir" | (cd "$HERE/$dir" && xargs -r cp -R --parents -t "$TMP/fresh/$(key "$dir")")
  # Compare both ways: changed, missing and stale generated files.
  if ! (cd "$TMP" && diff -ru "before/$(key "$dir")" "fresh/$(key "$dir")"); then
    echo "check-generated: the mdatagen output in $dir is out of date" >&2
    echo "$dir" >>"$TMP/drift"
  fi
done
if [[ -s "$TMP/drift" ]]; then
  echo "check-generated: mdatagen output drifted; run traceconsistencyprocessor/tools/mdatagen.sh (or go generate ./...)" >&2
  exit 1
fi
echo "check-generated: generated files are up to date"
