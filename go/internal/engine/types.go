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

// LateSpanPolicy mirrors tc_late_span_policy.
type LateSpanPolicy uint32

const (
	// LateForward forwards late spans at once, marked consistency.span.late=true.
	LateForward LateSpanPolicy = 0
	// LateDrop drops late spans (they are counted).
	LateDrop LateSpanPolicy = 1
)

// DuplicatePolicy mirrors tc_duplicate_policy.
type DuplicatePolicy uint32

const (
	// KeepBoth keeps conflicting spans that share a span ID, each marked with a finding.
	KeepBoth DuplicatePolicy = 0
	// KeepLatest keeps the conflicting span with the latest HLC stamp.
	KeepLatest DuplicatePolicy = 1
)

// RestartStrategy mirrors tc_restart_strategy.
type RestartStrategy uint32

const (
	// RestartNone does nothing across restarts.
	RestartNone RestartStrategy = 0
	// RestartWait means the caller waits hlc.max_offset before ingesting.
	RestartWait RestartStrategy = 1
	// RestartPersist keeps an upper bound of issued stamps in hlc.state_file.
	RestartPersist RestartStrategy = 2
)

// WALSync mirrors tc_wal_sync: when a write-ahead log record counts as durable.
type WALSync uint32

const (
	// WALSyncBatch: an ingest returns once its record is fsync'd (concurrent ingests share
	// one fsync).
	WALSyncBatch WALSync = 0
	// WALSyncInterval: a background fsync at most every wal.sync_interval.
	WALSyncInterval WALSync = 1
	// WALSyncNone: no fsync; the OS writes back.
	WALSyncNone WALSync = 2
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

// Config is the engine configuration in Go types; field comments name the YAML keys.
type Config struct {
	NumShards         uint32          // num_shards
	QuietPeriod       time.Duration   // quiet_period
	IdleTimeout       time.Duration   // idle_timeout
	MaxAge            time.Duration   // max_age
	MaxBufferedSpans  int64           // max_buffered_spans
	MaxBufferedBytes  int64           // max_buffered_bytes
	MaxSpansPerTrace  int64           // max_spans_per_trace
	LateSpanPolicy    LateSpanPolicy  // late_spans.policy
	LateCacheSize     int64           // late_spans.cache_size
	ChecksDisabled    uint32          // checks.disabled, as a mask of 1 << kind (see KindMask)
	WriteAttributes   bool            // checks.write_attributes
	ChildTolerance    time.Duration   // checks.child_tolerance
	SkewCorrection    bool            // checks.skew_correction.enabled
	SkewMaxAdjustment time.Duration   // checks.skew_correction.max_adjustment
	DuplicatePolicy   DuplicatePolicy // duplicates.conflict_policy
	HLCEnabled        bool            // hlc.enabled
	HLCMaxOffset      time.Duration   // hlc.max_offset
	HLCRestart        RestartStrategy // hlc.restart_strategy
	HLCStateFile      string          // hlc.state_file ("" = none)
	HandoffOnShutdown bool            // handoff.on_shutdown
	HandoffOnIdle     bool            // handoff.on_idle
	HandoffMaxHops    int64           // handoff.max_hops
	HandoffKey        string          // handoff.key ("" = none: no marker is honoured)
	WALDirectory      string          // wal.directory ("" = no write-ahead log)
	WALSync           WALSync         // wal.sync
	WALSyncInterval   time.Duration   // wal.sync_interval
	WALMaxBytes       int64           // wal.max_bytes
}

// Reason is why a unit left the engine (tc_release_reason).
type Reason uint32

// Release reasons, in the order of tc_release_reason.
const (
	ReasonComplete Reason = iota
	ReasonIdleTimeout
	ReasonMaxAge
	ReasonMemoryPressure
	ReasonSpanLimit
	ReasonShutdown
	ReasonLate
	ReasonUnassembled
	ReasonWALFull
)

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

// Unit is one released unit of a drain: a whole trace, or late / unassembled spans.
type Unit struct {
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
	Units    []Unit
	Findings []FindingCount
	Spans    uint64
	// Token acknowledges the release with Engine.Delivered (write-ahead log only; 0: none).
	Token uint64
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

// Stats are the engine's cumulative counters and current gauges: tc_stats field for field
// (same order, all uint64; a test compares names and offsets). See include/traceconsistency.h
// for what each means.
type Stats struct {
	BufferedSpans         uint64
	BufferedBytes         uint64
	BufferedTraces        uint64
	ReadySpans            uint64
	ReadyBytes            uint64
	SpansReceived         uint64
	BatchesRefused        uint64
	BatchesThrottled      uint64
	DuplicatesDropped     uint64
	ConflictsDropped      uint64
	LateForwarded         uint64
	LateDropped           uint64
	Unassembled           uint64
	FutureTimestamps      uint64
	HLCRefusals           uint64
	HLCBackwardJumps      uint64
	HLCMaxForwardOffsetNs uint64
	HLCLogicalOverflows   uint64
	HLCPersistErrors      uint64
	MemorySpanBytes       uint64
	MemoryIndexBytes      uint64
	MemoryTraceBytes      uint64
	MemoryGroupBytes      uint64
	MemoryLateCacheBytes  uint64
	MemoryTotalBytes      uint64
	HLCStalledBatches     uint64
	// Hand-off (tc_stats.handoff_*).
	HandoffReceivedSpans    uint64
	HandoffMergedSpans      uint64
	HandoffIncompleteTraces uint64
	WALBytes                uint64
	WALSegments             uint64
	WALFsyncs               uint64
	WALFsyncBuckets         [24]uint64
	WALFullRefusals         uint64
	WALWriteErrors          uint64
	WALRecordsReplayed      uint64
	WALSpansReplayed        uint64
	WALTracesRecovered      uint64
	WALCorruptRecords       uint64
	WALTornRecords          uint64
	WALRedeliveredSpans     uint64
	MemoryWALBytes          uint64
	HandoffUntrustedSpans   uint64
	// DrainLostSpans: spans a drain took and lost to an internal error (a panic).
	DrainLostSpans uint64
	// What is still coming (tc_stats.traces_awaited_children .. memory_learned_bytes).
	TracesAwaitedChildren   uint64
	ExpectedChildrenMissing uint64
	LearnedFromLateSpans    uint64
	LearnedCallKeys         uint64
	LearnedEdges            uint64
	MemoryLearnedBytes      uint64
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

// Code is a tc_result failure code.
type Code uint32

// Failure codes of tc_result.
const (
	CodeNullArgument   Code = 7001
	CodeInvalidConfig  Code = 7002
	CodeMalformedInput Code = 7003
	CodeEmptyInput     Code = 7004
	CodePanic          Code = 7005
	CodeFull           Code = 7006
	CodeClockStalled   Code = 7007
	CodeWALUnavailable Code = 7008
	CodeTooLarge       Code = 7009
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

// staticKindNames and staticReasonNames are the names as compiled into Go; with cgo the
// names are read from Rust at init (a test checks both agree), without cgo these are used.
var staticKindNames = []string{
	"missing_parent",
	"no_root",
	"multiple_roots",
	"parent_cycle",
	"conflicting_span_id",
	"invalid_trace_id",
	"invalid_span_id",
	"negative_duration",
	"starts_before_parent",
	"ends_after_parent",
	"clock_skew",
	"sampled_flag_mismatch",
	"remote_parent_mismatch",
	"future_timestamp",
	"hlc_offset_exceeded",
	"expected_child_missing",
}

var staticReasonNames = []string{
	"complete",
	"idle_timeout",
	"max_age",
	"memory_pressure",
	"span_limit",
	"shutdown",
	"late",
	"unassembled",
	"wal_full",
}
