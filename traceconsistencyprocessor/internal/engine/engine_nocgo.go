//go:build !cgo

package engine

import "time"

// Available reports whether the package was built with cgo (and so with the Rust engine).
const Available = false

var (
	kindNames   = staticKindNames
	reasonNames = staticReasonNames
)

// ErrNoCgo is returned by every engine call in a build without cgo.
var ErrNoCgo = &Error{
	Code:    CodeNoCgo,
	Message: "traceconsistency needs cgo: build the collector with CGO_ENABLED=1 and the Rust library (cargo build --release)",
}

// Engine is a stub without cgo; New always fails.
type Engine struct{}

// Validate only checks what Go can without Rust: nothing. The component's Validate does the
// Go-side checks.
func Validate(Config) error { return nil }

// New fails: the engine is Rust, reached through cgo.
func New(Config) (*Engine, error) { return nil, ErrNoCgo }

// Ingest fails without cgo.
func (*Engine) Ingest([]byte, time.Time) (IngestResult, error) { return IngestResult{}, ErrNoCgo }

// HLCStart fails without cgo.
func (*Engine) HLCStart() (HLCStart, error) { return 0, ErrNoCgo }

// Tick fails without cgo.
func (*Engine) Tick(time.Time) (uint64, error) { return 0, ErrNoCgo }

// Shutdown fails without cgo.
func (*Engine) Shutdown(time.Time) (uint64, error) { return 0, ErrNoCgo }

// Drain fails without cgo.
func (*Engine) Drain(uint64) (*Release, error) { return nil, ErrNoCgo }

// DrainHandoff fails without cgo.
func (*Engine) DrainHandoff(uint64) (*Release, error) { return nil, ErrNoCgo }

// Delivered does nothing without cgo.
func (*Engine) Delivered(uint64) {}

// Recover fails without cgo.
func (*Engine) Recover(time.Time) (Recovery, error) { return Recovery{}, ErrNoCgo }

// Stats fails without cgo.
func (*Engine) Stats() (Stats, error) { return Stats{}, ErrNoCgo }

func (*Engine) ExportLags(time.Time) ([]ExportLag, error) { return nil, ErrNoCgo }

// Close does nothing without cgo.
func (*Engine) Close() {}

// RustDefaults needs cgo; without it the zero Config is returned.
func RustDefaults() Config { return Config{} }
