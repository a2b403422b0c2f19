package engine

// ABIVersion is the version of the C ABI (traceconsistency.h) this package is written
// against. A linked library reporting another version (tc_abi_version) is refused: the
// package panics at initialisation, before any call into it, with a message naming both
// versions. Bump it together with ABI_VERSION in rust/version.rs.
const ABIVersion = 1

// LibraryInfo identifies the linked Rust library.
type LibraryInfo struct {
	// ABIVersion is the library's C ABI version (equal to the package's ABIVersion).
	ABIVersion uint32
	// Version is the crate version the library was built from, e.g. "0.1.0".
	Version string
	// SourceHash is the SHA-256 (hex) of the Rust sources it was built from; see
	// scripts/check-prebuilt.sh.
	SourceHash string
}

// Library describes the linked Rust library; the zero LibraryInfo without cgo.
func Library() LibraryInfo { return library }
