// Package linuxamd64 carries libtraceconsistency.a, the traceconsistency Rust engine as a
// static library prebuilt for linux/amd64 (stripped of debug information), and links it into
// any program that imports the package (cgo, CGO_ENABLED=1).
//
// Do not import it yourself: github.com/traceconsistency/traceconsistency/traceconsistencyprocessor imports it
// on linux/amd64 unless it is built with the tag tc_from_source. It is a module of its own
// so that only users on this platform download the library, and it must be at the same
// version as the processor module (the processor refuses a library of another ABI version).
//
// The library is release output, not part of the source tree: `make release VERSION=vX.Y.Z`
// builds it from the Rust sources of the same commit and packs it into this module's
// released version, checked against those sources (scripts/check-prebuilt.sh). In the
// source tree the package does not compile without the tag tc_from_source (no_library.go
// says so).
package linuxamd64
