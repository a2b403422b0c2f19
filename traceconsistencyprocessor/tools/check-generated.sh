#!/usr/bin/env bash
# Fails (exit 1) when the committed mdatagen output in go/ differs from what mdatagen makes of
# go/metadata.yaml now. Generates into a temporary copy; go/ itself is not touched.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$(dirname "${BASH_SOURCE[0]}")"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

"$TOOLS/mdatagen.sh" "$TMP/fresh"

status=0
# Compare both ways: changed, missing and stale generated files.
{ "$TOOLS/generated-files.sh" "$HERE"; "$TOOLS/generated-files.sh" "$TMP/fresh"; } | sort -u | while read -r f; do
  if ! diff -ru "$HERE/$f" "$TMP/fresh/$f"; then
    echo "check-generated: $f is out of date" >&2
    echo drift >>"$TMP/drift"
  fi
done
if [[ -e "$TMP/drift" ]]; then
  echo "check-generated: mdatagen output drifted; run go/tools/mdatagen.sh (or go generate ./...) in go/" >&2
  status=1
else
  echo "check-generated: generated files are up to date"
fi
exit $status
