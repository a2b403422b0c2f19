#!/usr/bin/env bash
# Lists, relative to the component folder $1, the files mdatagen generates.
set -euo pipefail
cd "$1"
for f in documentation.md generated_*.go internal/metadata/generated_*.go internal/metadatatest; do
  [[ -e "$f" ]] && echo "$f"
done
exit 0
