// Package engine is the only place where the Go component meets C: it wraps the Rust
// tail-assembly engine (include/traceconsistency.h) behind Go types. Nothing outside this
// package imports "C".
//
// Ownership: an [Engine] owns one tc_engine and frees it in [Engine.Close]. Input bytes are
// lent to Rust for the duration of one call; released OTLP is decoded into Go memory and the
// Rust buffer is freed before [Engine.Drain] returns, so no C memory escapes this package.
package engine

import (
	"fmt"
	"reflect"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// HLCStart mirrors tc_hlc_start: how the clock started.
type HLCStart uint32

const (
	// HLCStartReady: nothing to do (no persist strategy, or the clock resumed above the bound
	// in hlc.state_file).
	HLCStartReady HLCStart = 0
	// HLCStartStateFileMissing: hlc.state_file did not exist (a first start, or it was lost).
	HLCStartStateFileMissing HLCStart = 1
	// HLCStartStateFileEmpty: hlc.state_file was empty (a crash before it reached the disk).
	HLCStartStateFileEmpty HLCStart = 2
)

// NeedsWait reports whether the caller must wait hlc.max_offset before ingesting, as with
// restart strategy wait.
func (s HLCStart) NeedsWait() bool { return s != HLCStartReady }

// String is the snake_case name used in attributes and metrics.
func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason_%d", uint32(r))
}

// IsTrace reports whether the unit is an assembled trace (not late or unassembled spans).
func (r Reason) IsTrace() bool { return r <= ReasonShutdown || r == ReasonWALFull }

// Reasons lists every release reason.
func Reasons() []Reason {
	out := make([]Reason, len(reasonNames))
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// FindingKinds returns the snake_case names of all finding kinds, indexed by kind.
func FindingKinds() []string { return append([]string(nil), kindNames...) }

// KindName returns the name of finding kind k.
func KindName(k uint32) string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind_%d", k)
}

// KindMask turns finding kind names into a mask of 1 << kind. It fails on the first unknown
// name, returning it.
func KindMask(names []string) (uint32, error) {
	var mask uint32
	for _, n := range names {
		i := indexOf(kindNames, n)
		if i < 0 {
			return 0, fmt.Errorf("unknown finding kind %q", n)
		}
		mask |= 1 << uint(i)
	}
	return mask, nil
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

// IngestResult is what one Ingest did (tc_ingest_result).
type IngestResult struct {
	Buffered      uint64
	LateForwarded uint64
	LateDropped   uint64
	Unassembled   uint64
	// ReadySpans waiting to be drained after the call; drain when non-zero.
	ReadySpans uint64
}

// ReleasedUnit is one released unit of a drain (tc_released_unit): a whole trace, or late /
// unassembled spans.
type ReleasedUnit struct {
	Reason Reason
	Spans  uint32
	// Age from the first span's arrival to the release.
	Age time.Duration
	// Findings is a mask of 1 << kind of the kinds found in the unit.
	Findings uint32
}

// FindingCount is the number of findings of one kind for one service.name in a drain.
type FindingCount struct {
	Kind    string
	Service string
	Count   uint64
}

// ForwardedAtOnce reports whether the release holds spans forwarded without assembly (late
// or unassembled), which came from the batch that released them.
func (r *Release) ForwardedAtOnce() bool {
	for _, u := range r.Units {
		if !u.Reason.IsTrace() {
			return true
		}
	}
	return false
}

// DecodeError is a drained release that could not be decoded into pdata; its spans are
// lost (the Rust buffer is freed).
type DecodeError struct {
	Spans uint64
	// Token acknowledges the lost release (see Release.Token).
	Token uint64
	Err   error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("decoding a released batch of %d spans: %v", e.Spans, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

// Release is one drained batch, decoded into Go memory.
type Release struct {
	Traces   ptrace.Traces
	Units    []ReleasedUnit
	Findings []FindingCount
	Spans    uint64
	// Token acknowledges the release with Engine.Delivered (write-ahead log only; 0: none).
	Token uint64
	// BuilderFallbacks counts the parts of the release the release builder left to
	// ProtoUnmarshaler (0 or 1 unless a large release was decoded in parts).
	BuilderFallbacks int
}

// Recovery is what Engine.Recover replayed from the write-ahead log (tc_recovery).
type Recovery struct {
	Records           uint64
	Batches           uint64
	Spans             uint64
	Traces            uint64
	CorruptRecords    uint64
	TornRecords       uint64
	RedeliveredSpans  uint64
	UnreadableBatches uint64
	// More: the replay paused for drains; the counts are those so far.
	More bool
	// Problems describes the damage found, one line per problem, naming the file.
	Problems string
}

// ExportLag is one service's export lag as the engine learned it: how long after a span
// ends the service's spans arrive.
type ExportLag struct {
	Service string
	Lag     time.Duration
}

// MemoryParts lists the engine's memory by part, with the names used in metrics.
func (s Stats) MemoryParts() []MemoryPart {
	return []MemoryPart{
		{"spans", s.MemorySpanBytes},
		{"index", s.MemoryIndexBytes},
		{"traces", s.MemoryTraceBytes},
		{"groups", s.MemoryGroupBytes},
		{"late_cache", s.MemoryLateCacheBytes},
		{"ready", s.ReadyBytes},
		{"wal", s.MemoryWALBytes},
		{"learned", s.MemoryLearnedBytes},
	}
}

// MemoryPart is one part of the engine's memory.
type MemoryPart struct {
	Name  string
	Bytes uint64
}

// StructField is a field's name and offset, for layout checks.
type StructField struct {
	Name   string
	Offset uintptr
}

func structFields(t reflect.Type) []StructField {
	out := make([]StructField, t.NumField())
	for i := range out {
		f := t.Field(i)
		out[i] = StructField{Name: f.Name, Offset: f.Offset}
	}
	return out
}

// Go-only failure codes.
const (
	// CodeNoCgo is Go-only: the package was built without cgo.
	CodeNoCgo Code = 9001
	// CodeClosed is Go-only: the engine was already closed.
	CodeClosed Code = 9002
)

// Error is a failed engine call: the result code and Rust's message.
type Error struct {
	Code    Code
	Message string
}

func (e *Error) Error() string { return e.Message }

// Retryable reports whether the batch was refused only for now: the engine's memory is
// full of released data that has not left yet, the HLC reached the bound in
// hlc.state_file, which cannot be written, or the write-ahead log could not take it (at
// wal.max_bytes, disk full). Nothing of it was kept; the sender should retry.
func (e *Error) Retryable() bool {
	return e.Code == CodeFull || e.Code == CodeClockStalled || e.Code == CodeWALUnavailable
}

// Refused reports whether the error means the input batch was refused as a whole
// (malformed, empty, too large to log): retrying the same bytes cannot succeed.
func (e *Error) Refused() bool {
	return e.Code == CodeMalformedInput || e.Code == CodeEmptyInput || e.Code == CodeTooLarge
}
