//go:build !cgo

package engine

// Without cgo no library is linked.
var library LibraryInfo
