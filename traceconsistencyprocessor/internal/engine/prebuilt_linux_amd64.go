//go:build cgo && !tc_from_source

package engine

// The Rust engine prebuilt for linux/amd64, from its own module (see its doc). Build with the
// tag tc_from_source to link target/release/libtraceconsistency.a of a clone instead.
import _ "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/lib/linux_amd64"
