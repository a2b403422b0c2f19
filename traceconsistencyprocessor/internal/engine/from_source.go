//go:build cgo && tc_from_source

package engine

// With the tag tc_from_source the package links the library built from the sources of the
// clone it sits in (cargo build --release), instead of the prebuilt one: for development
// (the Makefile always sets it) and for platforms without a prebuilt library.

// #cgo LDFLAGS: ${SRCDIR}/../../../target/release/libtraceconsistency.a -lm -ldl -lpthread
import "C"
