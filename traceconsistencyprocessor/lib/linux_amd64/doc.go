// Package linuxamd64 carries libtraceconsistency.a, the traceconsistency Rust engine as a
// static library prebuilt for linux/amd64 (stripped of debug information), and links it into
// any program that imports the package (cgo, CGO_ENABLED=1).
//
// Do not import it yourself: github.com/traceconsistency/traceconsistency/traceconsistencyprocessor imports it
// on linux/amd64 unless it is built with the tag tc_from_source. It is a module of its own
// so that only users on this platform download the library, and it must be at the same
// version as the processor module (the processor refuses a library of another ABI version).
//
// The library is rebuilt from the Rust sources of the same commit with `make prebuilt`;
// `make check-prebuilt` fails when it is not current.
package linuxamd64
