//go:build cgo

package engine

// #include "traceconsistency.h"
import "C"

import "fmt"

// library is initialised before every other package-level variable that calls into the
// library (file order: abi*.go sort first), so a library of another ABI is refused before
// anything relies on it.
var library = checkLibrary(LibraryInfo{
	ABIVersion: uint32(C.tc_abi_version()),
	Version:    C.GoString(C.tc_library_version()),
	SourceHash: C.GoString(C.tc_source_hash()),
})

func checkLibrary(l LibraryInfo) LibraryInfo {
	if l.ABIVersion != ABIVersion {
		panic(fmt.Sprintf("traceconsistency: the linked Rust library (version %s, source %.12s) has C ABI version %d, "+
			"this Go package expects %d: use the modules github.com/traceconsistency/traceconsistency/traceconsistencyprocessor and "+
			"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/lib/<os>_<arch> at the same version, or rebuild "+
			"the library from the same commit (make release, or cargo build --release with the tag tc_from_source)",
			l.Version, l.SourceHash, l.ABIVersion, ABIVersion))
	}
	return l
}
