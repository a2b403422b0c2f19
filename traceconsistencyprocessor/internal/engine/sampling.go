//go:build cgo

package engine

/*
#include <stdlib.h>
#include "traceconsistency.h"
*/
import "C"

import (
	"time"
	"unsafe"
)

// ValidateSampling runs the Rust validation of a sampling section given as JSON (nil or
// empty: none); the error names the YAML key.
func ValidateSampling(samplingJSON []byte) error {
	var e C.tc_error
	p := (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(samplingJSON)))
	if r := C.tc_sampling_validate(p, C.size_t(len(samplingJSON)), &e); r != C.TC_RESULT_OK {
		return errorFrom(r, &e)
	}
	return nil
}

// NewWithSampling builds an engine from c that decides each released trace by the sampling
// section samplingJSON (nil or empty: none, the same as New) before encoding it: dropped
// traces never reach Go.
func NewWithSampling(c Config, samplingJSON []byte) (*Engine, error) {
	if len(samplingJSON) == 0 {
		return New(c)
	}
	cc, free := toC(c)
	defer free()
	var e C.tc_error
	var ptr *C.tc_engine
	p := (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(samplingJSON)))
	if r := C.tc_engine_new_sampling(&cc, p, C.size_t(len(samplingJSON)), &ptr, &e); r != C.TC_RESULT_OK {
		return nil, errorFrom(r, &e)
	}
	return &Engine{ptr: ptr, created: time.Now()}, nil
}

// SamplingCounts returns the traces and spans each sampling rule kept and dropped, in the
// rules' order, then the default's; nil without sampling.
func (g *Engine) SamplingCounts() ([]SamplingCount, error) {
	if g.ptr == nil {
		return nil, errClosed
	}
	var n C.size_t
	if r := C.tc_engine_sampling_counts(g.ptr, nil, 0, &n); r != C.TC_RESULT_OK {
		return nil, &Error{Code: Code(r), Message: "tc_engine_sampling_counts failed"}
	}
	if n == 0 {
		return nil, nil
	}
	buf := make([]C.tc_sampling_count, n)
	if r := C.tc_engine_sampling_counts(g.ptr, &buf[0], n, &n); r != C.TC_RESULT_OK {
		return nil, &Error{Code: Code(r), Message: "tc_engine_sampling_counts failed"}
	}
	out := make([]SamplingCount, min(int(n), len(buf)))
	for i := range out {
		c := buf[i]
		out[i] = SamplingCount{KeptTraces: uint64(c.kept_traces), KeptSpans: uint64(c.kept_spans), DroppedTraces: uint64(c.dropped_traces), DroppedSpans: uint64(c.dropped_spans)}
	}
	return out, nil
}
