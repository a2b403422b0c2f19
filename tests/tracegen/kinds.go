package tracegen

import (
	"fmt"
	"strings"
)

// BrokenKind names one way a trace can be broken. The zero value ("") means
// a healthy trace.
type BrokenKind string

const (
	// MissingParent: a non-root span that has children is never sent, so its
	// children are orphans (their parent_span_id is not among the sent span ids).
	MissingParent BrokenKind = "missing_parent"
	// TwoRoots: a non-root span (with its subtree) is sent with an empty
	// parent_span_id, so the trace has two roots.
	TwoRoots BrokenKind = "two_roots"
	// DuplicateSpan: one span is sent twice with identical content (an exact
	// retry); the copy is sent last, after the rest of the trace.
	DuplicateSpan BrokenKind = "duplicate_span"
	// ConflictingDuplicate: one span is sent twice with the same span id but
	// different content (an attribute value and the end time differ).
	ConflictingDuplicate BrokenKind = "conflicting_duplicate"
	// SkewedChild: a SERVER span on another host (remote parent) and its whole
	// subtree are shifted by Config.Skew (+2s by default), outside the
	// interval of its CLIENT parent.
	SkewedChild BrokenKind = "skewed_child"
	// SampledMismatch: a span whose parent is in the same process (not remote)
	// has the W3C sampled flag cleared while the rest of the trace is sampled.
	// The SDK cannot export unsampled spans, so this kind is always sent with
	// pdata.
	SampledMismatch BrokenKind = "sampled_mismatch"
	// FutureTimestamp: a leaf span starts Config.FutureOffset (1h by default)
	// after the trace's anchor time (the generation wall clock by default).
	FutureTimestamp BrokenKind = "future_timestamp"
	// ZeroTraceID: a leaf span is sent with an all-zero trace id. Always sent
	// with pdata.
	ZeroTraceID BrokenKind = "zero_trace_id"
	// ZeroSpanID: a leaf span is sent with an all-zero span id. Always sent
	// with pdata.
	ZeroSpanID BrokenKind = "zero_span_id"
)

// AllBrokenKinds returns every broken kind, in a fixed order.
func AllBrokenKinds() []BrokenKind {
	return []BrokenKind{
		MissingParent, TwoRoots, DuplicateSpan, ConflictingDuplicate,
		SkewedChild, SampledMismatch, FutureTimestamp, ZeroTraceID, ZeroSpanID,
	}
}

// Valid reports whether k is one of the known broken kinds.
func (k BrokenKind) Valid() bool {
	for _, x := range AllBrokenKinds() {
		if k == x {
			return true
		}
	}
	return false
}

// PDataOnly reports whether the OpenTelemetry SDK cannot produce this kind,
// so that SendSDK sends such traces with pdata over OTLP gRPC instead.
func (k BrokenKind) PDataOnly() bool {
	switch k {
	case SampledMismatch, ZeroTraceID, ZeroSpanID:
		return true
	}
	return false
}

// ParseBrokenKinds parses a comma-separated list of broken kinds. "all"
// selects every kind; "" and "none" select none. Dashes are accepted in place
// of underscores.
func ParseBrokenKinds(s string) ([]BrokenKind, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return nil, nil
	}
	if s == "all" {
		return AllBrokenKinds(), nil
	}
	var out []BrokenKind
	seen := map[BrokenKind]bool{}
	for _, part := range strings.Split(s, ",") {
		k := BrokenKind(strings.ReplaceAll(strings.TrimSpace(part), "-", "_"))
		if k == "" {
			continue
		}
		if !k.Valid() {
			return nil, fmt.Errorf("unknown broken kind %q (known: %s)", part, kindList())
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out, nil
}

func kindList() string {
	var names []string
	for _, k := range AllBrokenKinds() {
		names = append(names, string(k))
	}
	return strings.Join(names, ",")
}
