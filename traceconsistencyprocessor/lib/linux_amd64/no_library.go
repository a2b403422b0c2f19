//go:build cgo && linux && amd64

package linuxamd64

// The source tree has no prebuilt library: it is release output. A release (make release,
// scripts/dist.sh) puts libtraceconsistency.a into this module and leaves this file out, so
// this error stops only a build from the sources without the tag tc_from_source, which would
// otherwise fail at the link with a missing file. In a clone, run cargo build --release and
// build with -tags tc_from_source (the Makefile and examples/builder-config.yaml do); in your
// own collector, require a released version of the processor module.
var _ = traceconsistency_source_tree_has_no_prebuilt_library_build_with_tag_tc_from_source_or_use_a_released_module
