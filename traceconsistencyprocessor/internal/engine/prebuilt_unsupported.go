//go:build cgo && !(linux && amd64) && !tc_from_source

package engine

// There is no prebuilt Rust library for this platform (only linux/amd64 has one). Build it
// from source in a clone of the repository and link that with the tag tc_from_source:
//
//	cargo build --release            # target/release/libtraceconsistency.a
//	go build -tags tc_from_source ... # with the processor module replaced by <clone>/go
//
// (in an ocb manifest: a `replaces:` entry to <clone>/go, and GOFLAGS=-tags=tc_from_source
// in the environment of ocb). See "Using it in your collector" in the README.
var _ = traceconsistency_has_no_prebuilt_library_for_this_platform_build_from_source_with_tag_tc_from_source
