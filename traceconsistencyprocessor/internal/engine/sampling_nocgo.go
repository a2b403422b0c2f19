//go:build !cgo

package engine

// ValidateSampling checks nothing without cgo (the engine owns the sampling section).
func ValidateSampling([]byte) error { return nil }

// NewWithSampling fails: the engine is Rust, reached through cgo.
func NewWithSampling(Config, []byte) (*Engine, error) { return nil, ErrNoCgo }

// SamplingCounts fails without cgo.
func (*Engine) SamplingCounts() ([]SamplingCount, error) { return nil, ErrNoCgo }
