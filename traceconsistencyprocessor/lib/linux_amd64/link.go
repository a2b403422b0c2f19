//go:build cgo && linux && amd64

package linuxamd64

// #cgo LDFLAGS: ${SRCDIR}/libtraceconsistency.a -lm -ldl -lpthread
import "C"
