//go:build cgo

package engine

/*
#cgo CFLAGS: -I${SRCDIR}
#include <stdlib.h>
#include "traceconsistency.h"
*/
import "C"

import (
	"encoding/binary"
	"reflect"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Available reports whether the package was built with cgo (and so with the Rust engine).
const Available = true

var (
	kindNames   = cNames(func(i uint32) *C.char { return C.tc_finding_kind_name(C.uint32_t(i)) }, int(C.tc_finding_kind_count()))
	reasonNames = cNames(func(i uint32) *C.char { return C.tc_release_reason_name(C.uint32_t(i)) }, int(C.tc_release_reason_count()))
)

// cNames reads the static names Rust gives for 0..n once, at package init.
func cNames(name func(uint32) *C.char, n int) []string {
	out := make([]string, n)
	for i := range out {
		p := name(uint32(i))
		if p == nil {
			panic("traceconsistency: Rust has no name for enum value; header and library disagree")
		}
		out[i] = C.GoString(p)
	}
	return out
}

// Engine wraps one Rust tc_engine. Every method but Close is safe for concurrent use;
// Close must be the last call and must not race with the others (the caller guards it).
type Engine struct {
	ptr *C.tc_engine
	// created is when New returned, with its monotonic reading (see clocks).
	created time.Time
}

func errorFrom(code C.tc_result, e *C.tc_error) error {
	msg := C.GoString(&e.message[0])
	if msg == "" {
		msg = "traceconsistency engine call failed"
	}
	return &Error{Code: Code(code), Message: msg}
}

// Validate runs the Rust validation of c; the error names the YAML key.
func Validate(c Config) error {
	cc, free := toC(c)
	defer free()
	var e C.tc_error
	if r := C.tc_config_validate(&cc, &e); r != C.TC_RESULT_OK {
		return errorFrom(r, &e)
	}
	return nil
}

// New builds an engine from c (validating it first, in Rust).
func New(c Config) (*Engine, error) {
	cc, free := toC(c)
	defer free()
	var e C.tc_error
	var ptr *C.tc_engine
	if r := C.tc_engine_new(&cc, &ptr, &e); r != C.TC_RESULT_OK {
		return nil, errorFrom(r, &e)
	}
	return &Engine{ptr: ptr, created: time.Now()}, nil
}

// clocks gives the engine's two clocks from one reading: the wall clock, for HLC stamps,
// and a monotonic clock, for every timer (quiet period, idle timeout, max age), so that a
// step of the host clock neither holds traces past max_age nor releases them early. The
// monotonic clock is the creation's wall time plus the time elapsed since by the monotonic
// readings (time.Now carries one). A reading without one (a test clock) serves as both.
func (g *Engine) clocks(now time.Time) (wall, mono C.uint64_t) {
	wall = nanos(now)
	if now == now.Round(0) { // Round(0) strips the monotonic reading: there is none
		return wall, wall
	}
	return wall, nanos(g.created.Round(0).Add(max(now.Sub(g.created), 0)))
}

func nanos(t time.Time) C.uint64_t {
	n := t.UnixNano()
	if n < 0 {
		return 0
	}
	return C.uint64_t(n)
}

var errClosed = &Error{Code: CodeClosed, Message: "traceconsistency engine is closed"}

// Ingest hands one serialized ExportTraceServiceRequest to the engine: one cgo call per
// batch. The bytes are only read during the call. A refused batch (malformed or empty)
// returns an *Error whose Refused() is true; nothing of it was kept.
func (g *Engine) Ingest(data []byte, now time.Time) (IngestResult, error) {
	if g.ptr == nil {
		return IngestResult{}, errClosed
	}
	var out C.tc_ingest_result
	var e C.tc_error
	wall, mono := g.clocks(now)
	// A Go pointer to bytes without Go pointers may be passed for the call's duration.
	p := (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(data)))
	if r := C.tc_engine_ingest(g.ptr, p, C.size_t(len(data)), wall, mono, &out, &e); r != C.TC_RESULT_OK {
		return IngestResult{}, errorFrom(r, &e)
	}
	return IngestResult{
		Buffered:      uint64(out.buffered),
		LateForwarded: uint64(out.late_forwarded),
		LateDropped:   uint64(out.late_dropped),
		Unassembled:   uint64(out.unassembled),
		ReadySpans:    uint64(out.ready_spans),
	}, nil
}

// HLCStart reports how the clock started; with NeedsWait the caller waits hlc.max_offset
// before the first Ingest.
func (g *Engine) HLCStart() (HLCStart, error) {
	if g.ptr == nil {
		return 0, errClosed
	}
	var s C.tc_hlc_start
	if r := C.tc_engine_hlc_start(g.ptr, &s); r != C.TC_RESULT_OK {
		return 0, &Error{Code: Code(r), Message: "tc_engine_hlc_start failed"}
	}
	return HLCStart(s), nil
}

// Tick releases what is due at now into the ready queue; it returns the spans ready.
func (g *Engine) Tick(now time.Time) (uint64, error) {
	if g.ptr == nil {
		return 0, errClosed
	}
	var n C.uint64_t
	var e C.tc_error
	wall, mono := g.clocks(now)
	if r := C.tc_engine_tick(g.ptr, wall, mono, &n, &e); r != C.TC_RESULT_OK {
		return 0, errorFrom(r, &e)
	}
	return uint64(n), nil
}

// Shutdown releases everything buffered (reason shutdown); later ingests are released at
// once. Drain until it gives nil afterwards. It returns the spans ready.
func (g *Engine) Shutdown(now time.Time) (uint64, error) {
	if g.ptr == nil {
		return 0, errClosed
	}
	var n C.uint64_t
	var e C.tc_error
	wall, mono := g.clocks(now)
	if r := C.tc_engine_shutdown(g.ptr, wall, mono, &n, &e); r != C.TC_RESULT_OK {
		return 0, errorFrom(r, &e)
	}
	return uint64(n), nil
}

// Drain takes whole released units, about maxSpans spans (at least one unit), or returns
// nil when nothing is ready. The OTLP bytes are decoded straight from Rust's buffer (pdata's
// unmarshaler copies every string and byte field) and the Rust release is freed before
// returning.
func (g *Engine) Drain(maxSpans uint64) (*Release, error) {
	if g.ptr == nil {
		return nil, errClosed
	}
	var rel *C.tc_release
	var view C.tc_release_view
	var e C.tc_error
	if r := C.tc_engine_drain(g.ptr, C.uint64_t(maxSpans), &rel, &view, &e); r != C.TC_RESULT_OK {
		return nil, errorFrom(r, &e)
	}
	return takeRelease(rel, &view)
}

// DrainHandoff takes whole handed-off traces (handoff.on_shutdown, handoff.on_idle), about
// maxSpans spans, or returns nil when none waits. Each unit's Reason says why the trace was
// handed off (ReasonShutdown or ReasonIdleTimeout); its spans carry their HLC stamps and
// hop counts. Decoded and freed as Drain does.
func (g *Engine) DrainHandoff(maxSpans uint64) (*Release, error) {
	if g.ptr == nil {
		return nil, errClosed
	}
	var rel *C.tc_release
	var view C.tc_release_view
	var e C.tc_error
	if r := C.tc_engine_drain_handoff(g.ptr, C.uint64_t(maxSpans), &rel, &view, &e); r != C.TC_RESULT_OK {
		return nil, errorFrom(r, &e)
	}
	return takeRelease(rel, &view)
}

// takeRelease decodes a drained release (nil for none) and frees it. view is not copied
// onto the stack: an empty slice's pointer from Rust is a small non-nil value, which the Go
// runtime refuses to find in a stack frame.
func takeRelease(rel *C.tc_release, view *C.tc_release_view) (*Release, error) {
	if rel == nil {
		return nil, nil
	}
	defer C.tc_release_free(rel)

	out := &Release{Spans: uint64(view.spans), Token: uint64(view.delivery_token)}
	if view.otlp_len > 0 {
		buf := unsafe.Slice((*byte)(unsafe.Pointer(view.otlp)), int(view.otlp_len))
		if releaseBytesSeen != nil {
			releaseBytesSeen(buf)
		}
		td, fallbacks, err := unmarshalParallel(buf)
		if err != nil {
			return nil, &DecodeError{Spans: uint64(view.spans), Token: out.Token, Err: err}
		}
		out.Traces = td
		out.BuilderFallbacks = fallbacks
	} else {
		out.Traces = ptrace.NewTraces()
	}
	if view.units_len > 0 {
		units := unsafe.Slice(view.units, int(view.units_len))
		out.Units = make([]ReleasedUnit, len(units))
		for i, u := range units {
			out.Units[i] = ReleasedUnit{
				Reason:   Reason(u.reason),
				Spans:    uint32(u.spans),
				Age:      time.Duration(u.age_ns),
				Findings: uint32(u.findings),
			}
		}
	}
	if view.findings_len > 0 {
		fs := unsafe.Slice(view.findings, int(view.findings_len))
		out.Findings = make([]FindingCount, len(fs))
		for i, f := range fs {
			var svc string
			if f.service_len > 0 {
				svc = C.GoStringN((*C.char)(unsafe.Pointer(f.service)), C.int(f.service_len))
			}
			out.Findings[i] = FindingCount{Kind: KindName(uint32(f.kind)), Service: svc, Count: uint64(f.count)}
		}
	}
	return out, nil
}

// Delivered acknowledges a release by its Token once the next consumer accepted it (or it
// was counted as lost): with a write-ahead log, its spans are then not replayed after a
// restart. Token 0 is a no-op.
func (g *Engine) Delivered(token uint64) {
	if g.ptr == nil || token == 0 {
		return
	}
	C.tc_engine_delivered(g.ptr, C.uint64_t(token))
}

// Recover replays the write-ahead log (once): call after New and before the first Ingest.
// Without a log it reports nothing. The replay keeps to max_buffered_bytes: while the result
// has More set, it paused because released data fills the bound; drain (Drain, DrainHandoff)
// and call again.
func (g *Engine) Recover(now time.Time) (Recovery, error) {
	if g.ptr == nil {
		return Recovery{}, errClosed
	}
	var r C.tc_recovery
	detail := make([]byte, 8192)
	wall, mono := g.clocks(now)
	if rc := C.tc_engine_recover(g.ptr, wall, mono, &r, (*C.char)(unsafe.Pointer(&detail[0])), C.size_t(len(detail))); rc != C.TC_RESULT_OK {
		return Recovery{}, &Error{Code: Code(rc), Message: "tc_engine_recover failed"}
	}
	return Recovery{
		Records:           uint64(r.records),
		Batches:           uint64(r.batches),
		Spans:             uint64(r.spans),
		Traces:            uint64(r.traces),
		CorruptRecords:    uint64(r.corrupt_records),
		TornRecords:       uint64(r.torn_records),
		RedeliveredSpans:  uint64(r.redelivered_spans),
		UnreadableBatches: uint64(r.unreadable_batches),
		More:              r.more != 0,
		Problems:          C.GoString((*C.char)(unsafe.Pointer(&detail[0]))),
	}, nil
}

// Stats reads the engine's counters and gauges.
func (g *Engine) Stats() (Stats, error) {
	if g.ptr == nil {
		return Stats{}, errClosed
	}
	var s C.tc_stats
	if r := C.tc_engine_stats(g.ptr, &s); r != C.TC_RESULT_OK {
		return Stats{}, &Error{Code: Code(r), Message: "tc_engine_stats failed"}
	}
	// Stats has tc_stats's layout: every field a uint64, in the same order (statsLayout
	// and its test keep them in step).
	return *(*Stats)(unsafe.Pointer(&s)), nil
}

// maxExportLags is the most services ExportLags reports (the engine tracks at most 1024),
// and exportLagNames the room for their names.
const (
	maxExportLags  = 1024
	exportLagNames = 64 << 10
)

// ExportLags reads each service's learned export lag at now, the slowest first.
func (g *Engine) ExportLags(now time.Time) ([]ExportLag, error) {
	if g.ptr == nil {
		return nil, errClosed
	}
	out := make([]C.tc_export_lag, maxExportLags)
	names := make([]byte, exportLagNames)
	var n C.size_t
	_, mono := g.clocks(now)
	if r := C.tc_engine_export_lags(g.ptr, mono, &out[0], C.size_t(len(out)), (*C.uint8_t)(unsafe.Pointer(&names[0])), C.size_t(len(names)), &n); r != C.TC_RESULT_OK {
		return nil, &Error{Code: Code(r), Message: "tc_engine_export_lags failed"}
	}
	lags := make([]ExportLag, int(n))
	for i := range lags {
		o := out[i]
		lags[i] = ExportLag{
			Service: string(names[o.name_offset : o.name_offset+o.name_len]),
			Lag:     time.Duration(o.lag_ns),
		}
	}
	return lags, nil
}

// Compile-time check: Stats and tc_stats have one size.
var _ [unsafe.Sizeof(Stats{}) - unsafe.Sizeof(C.tc_stats{})]byte
var _ [unsafe.Sizeof(C.tc_stats{}) - unsafe.Sizeof(Stats{})]byte

// cStatsFields lists tc_stats's field names and offsets, for the test that keeps Stats in
// step with it.
func cStatsFields() []StructField { return structFields(reflect.TypeOf(C.tc_stats{})) }

// Close frees the engine and whatever is still buffered in it. Safe to call twice.
func (g *Engine) Close() {
	if g.ptr != nil {
		C.tc_engine_free(g.ptr)
		g.ptr = nil
	}
}

// parallelUnmarshalMin is the smallest release (OTLP bytes) whose decoding is split between
// goroutines; below it one decode is cheaper than the hand-off (~100 spans).
const parallelUnmarshalMin = 48 << 10

// unmarshalParallel decodes an ExportTraceServiceRequest into pdata (decodeRelease), in up to GOMAXPROCS
// parts decoded at once when it is large: the request is a sequence of ResourceSpans
// (field 1), so any cut between two of them leaves two valid requests, whose ResourceSpans
// are then moved, in order, into the first. The release path is one goroutine (releases
// leave in order); without this its decode, the bulk of its work, used one core.
func unmarshalParallel(buf []byte) (ptrace.Traces, int, error) {
	return unmarshalParts(buf, min(runtime.GOMAXPROCS(0), len(buf)/parallelUnmarshalMin))
}

// unmarshalParts decodes buf in up to parts parts at once (see unmarshalParallel); it also
// returns how many parts the release builder left to ProtoUnmarshaler.
func unmarshalParts(buf []byte, parts int) (ptrace.Traces, int, error) {
	cuts := topLevelCuts(buf, parts)
	if len(cuts) == 0 {
		td, fellBack, err := decodeRelease(buf)
		return td, b2i(fellBack), err
	}
	bounds := append(append([]int{0}, cuts...), len(buf))
	out := make([]ptrace.Traces, len(bounds)-1)
	errs := make([]error, len(bounds)-1)
	fellBack := make([]bool, len(bounds)-1)
	var wg sync.WaitGroup
	for i := 1; i < len(out); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i], fellBack[i], errs[i] = decodeRelease(buf[bounds[i]:bounds[i+1]])
		}()
	}
	out[0], fellBack[0], errs[0] = decodeRelease(buf[:bounds[1]])
	wg.Wait()
	fallbacks := 0
	for i, err := range errs {
		if err != nil {
			return ptrace.Traces{}, 0, err
		}
		fallbacks += b2i(fellBack[i])
	}
	for _, td := range out[1:] {
		td.ResourceSpans().MoveAndAppendTo(out[0].ResourceSpans())
	}
	return out[0], fallbacks, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// topLevelCuts returns up to parts-1 offsets in buf, each the start of a top-level field,
// that split it into parts of about equal size; none when parts < 2 or when the walk meets
// a field that is not a well-formed length-delimited one (a malformed request fails in the
// decode of one of its parts either way).
func topLevelCuts(buf []byte, parts int) []int {
	if parts < 2 {
		return nil
	}
	var cuts []int
	next := len(buf) / parts
	for pos := 0; pos < len(buf); {
		if pos >= next && pos > 0 {
			cuts = append(cuts, pos)
			if len(cuts) == parts-1 {
				return cuts
			}
			next = len(buf) * (len(cuts) + 1) / parts
		}
		tag, n := binary.Uvarint(buf[pos:])
		if n <= 0 || tag&7 != 2 {
			return nil
		}
		l, m := binary.Uvarint(buf[pos+n:])
		if m <= 0 || l > uint64(len(buf)-pos-n-m) {
			return nil
		}
		pos += n + m + int(l)
	}
	return cuts
}
