#!/usr/bin/env bash
# Regenerates the seed corpora under fuzz/corpus/<target>/ (commit them). Deterministic.
# The requests are built with prost like rust/testutil.rs, in the shapes tests/tracegen
# produces (that generator sends to an OTLP endpoint and has no option to write files).
set -euo pipefail
cd "$(dirname "$0")"
TOOLCHAIN="${FUZZ_TOOLCHAIN:-+nightly}"
cargo "$TOOLCHAIN" run --locked --quiet --bin make-corpus
for d in corpus/*/; do echo "$d: $(ls "$d" | wc -l) files"; done
