package engine

import (
	"encoding/binary"
	"errors"
	"sync"
	"unsafe"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// The release builder decodes the engine's release bytes (an OTLP ExportTraceServiceRequest)
// into pdata through pdata's public API, in place of ptrace.ProtoUnmarshaler, allocating
// less per span:
//
//   - every repeated field gets its exact capacity before the first append (one pass reads
//     a message's fields into the builder's scratch and counts them), so no slice grows by
//     append;
//   - attribute keys, span, event and scope names come from a bounded intern table (one per
//     builder, cleared when full) behind a small two-way cache, so a repeated key
//     costs no allocation and mostly no map lookup;
//   - the other strings of a span (attribute values, trace_state, status message) are
//     substrings of one copy of the span's bytes, made once per span; a resource's and a
//     scope's likewise. A value kept after the span is dropped keeps that copy (about the
//     span's encoded size) alive.
//
// It produces what ProtoUnmarshaler produces. What it does not handle the same way with the
// public API it hands back to ProtoUnmarshaler (errFallback): any byte sequence that is
// malformed or uses a wire type other than the expected one (ProtoUnmarshaler then returns
// its error), a singular message field given twice (ProtoUnmarshaler merges them), an
// AnyValue with more than one of its oneof fields, duplicate keys in one map (the public
// API would replace; ProtoUnmarshaler keeps both), fields pdata keeps but cannot show
// (the deprecated ScopeSpans, entity refs, string-table indexes), groups, and nesting
// at ProtoUnmarshaler's recursion limit. Each such release is counted (Release.BuilderFallbacks, the
// release_builder_fallbacks metric).

// errFallback says the builder leaves this input to ProtoUnmarshaler.
var errFallback = errors.New("release builder: input left to ProtoUnmarshaler")

const (
	// internMax bounds a builder's intern table; it is cleared when full.
	internMax = 4096
	// internMaxLen is the longest string interned; longer ones are not shared.
	internMaxLen = 128
	// internCacheSets is the number of sets of the two-way cache in front of the intern
	// table (a power of two): a release's spans mostly repeat a hundred or two keys and
	// names.
	internCacheBits = 8
	internCacheSets = 1 << internCacheBits
	// maxIdleFields bounds the scratch an idle builder keeps (24 bytes a field).
	maxIdleFields = 4096
	// recursionLimit is ProtoUnmarshaler's: its KeyValue, AnyValue, ArrayValue and
	// KeyValueList decoders each count one level (an attribute's KeyValue is level 0) and
	// refuse to start at this level. The builder counts the same levels and leaves input
	// at the limit to ProtoUnmarshaler (which refuses it).
	recursionLimit = 100
)

// decodeRelease decodes one ExportTraceServiceRequest: with a builder, or with
// ProtoUnmarshaler when the builder leaves the input to it (fellBack).
func decodeRelease(buf []byte) (td ptrace.Traces, fellBack bool, err error) {
	b := getBuilder()
	td, err = b.build(buf)
	putBuilder(b)
	if err == nil {
		return td, false, nil
	}
	td, err = (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(buf)
	return td, true, err
}

// releaseBuilder holds what one decode reuses: the intern table and its cache, and the
// scratch of fields read by scan. Not safe for concurrent use; decodeRelease takes one from
// a free list.
type releaseBuilder struct {
	names  map[string]string
	recent [internCacheSets][2]string
	fields []field
	arena  arena
}

var (
	buildersMu sync.Mutex
	builders   []*releaseBuilder
)

// maxIdleBuilders bounds the free list (the parallel split uses up to GOMAXPROCS at once);
// each idle builder keeps its intern table, at most internMax strings of internMaxLen bytes.
const maxIdleBuilders = 16

func getBuilder() *releaseBuilder {
	buildersMu.Lock()
	if n := len(builders); n > 0 {
		b := builders[n-1]
		builders = builders[:n-1]
		buildersMu.Unlock()
		return b
	}
	buildersMu.Unlock()
	return &releaseBuilder{names: make(map[string]string, internMax)}
}

func putBuilder(b *releaseBuilder) {
	b.idle()
	buildersMu.Lock()
	if len(builders) < maxIdleBuilders {
		builders = append(builders, b)
	}
	buildersMu.Unlock()
}

// idle drops what an idle builder should not keep: the last message's copy, and a scratch
// grown past maxIdleFields.
func (b *releaseBuilder) idle() {
	b.arena = arena{}
	if cap(b.fields) > maxIdleFields {
		b.fields = nil
	}
}

// intern returns p as a string shared with earlier equal strings of this builder.
func (b *releaseBuilder) intern(p []byte) string {
	if len(p) == 0 {
		return ""
	}
	if len(p) > internMaxLen {
		return b.arena.str(p)
	}
	set := &b.recent[internSet(p)]
	if set[0] == string(p) {
		return set[0]
	}
	if set[1] == string(p) {
		return set[1]
	}
	s, ok := b.names[string(p)]
	if !ok {
		if len(b.names) >= internMax {
			clear(b.names)
		}
		s = string(p)
		b.names[s] = s
	}
	set[0], set[1] = s, set[0]
	return s
}

// internSet is the cache set of p (not empty): a multiplicative hash of its length and of
// its first and last eight bytes (or three of its bytes when shorter), cheaper than the
// map's hash of all of them. A set keeps the two strings last put in it (a hit writes
// nothing), the latest first.
func internSet(p []byte) int {
	n := len(p)
	var h uint64
	if n >= 8 {
		h = binary.LittleEndian.Uint64(p) ^ binary.LittleEndian.Uint64(p[n-8:])*0xC2B2AE3D27D4EB4F
	} else {
		h = uint64(p[0]) | uint64(p[n/2])<<8 | uint64(p[n-1])<<16
	}
	h = (h ^ uint64(n)) * 0x9E3779B97F4A7C15
	return int(h >> (64 - internCacheBits))
}

// arena is one Go copy of a message's bytes; str returns a sub-slice of those bytes as a
// substring of the copy, without another allocation.
type arena struct {
	s    string
	base uintptr
	n    uintptr
}

func (b *releaseBuilder) setArena(msg []byte) {
	if len(msg) == 0 {
		b.arena = arena{}
		return
	}
	b.arena = arena{s: string(msg), base: uintptr(unsafe.Pointer(unsafe.SliceData(msg))), n: uintptr(len(msg))}
}

func (a *arena) str(p []byte) string {
	if len(p) == 0 {
		return ""
	}
	off := uintptr(unsafe.Pointer(unsafe.SliceData(p))) - a.base
	if a.s == "" || off >= a.n || uintptr(len(p)) > a.n-off {
		return string(p)
	}
	return a.s[off : off+uintptr(len(p))]
}

// refuseDeprecatedScopeSpans: ResourceSpans field 1000, which pdata keeps apart.
const refuseDeprecatedScopeSpans = 1000

// build decodes buf, or returns errFallback.
func (b *releaseBuilder) build(buf []byte) (ptrace.Traces, error) {
	b.fields = b.fields[:0]
	var c [17]int32
	start, err := b.scan(buf, &wantRequest, 0, &c)
	if err != nil {
		return ptrace.Traces{}, err
	}
	td := ptrace.NewTraces()
	rss := td.ResourceSpans()
	if c[1] > 0 {
		rss.EnsureCapacity(int(c[1]))
	}
	for i, end := start, len(b.fields); i < end; i++ {
		f := b.fields[i]
		if err := b.resourceSpans(rss.AppendEmpty(), f.bytes(buf)); err != nil {
			return ptrace.Traces{}, err
		}
	}
	b.fields = b.fields[:start]
	return td, nil
}

func (b *releaseBuilder) resourceSpans(rs ptrace.ResourceSpans, buf []byte) error {
	var c [17]int32
	start, err := b.scan(buf, &wantResourceSpans, refuseDeprecatedScopeSpans, &c)
	if err != nil {
		return err
	}
	if c[1] > 1 {
		return errFallback
	}
	sss := rs.ScopeSpans()
	if c[2] > 0 {
		sss.EnsureCapacity(int(c[2]))
	}
	for i, end := start, len(b.fields); i < end; i++ {
		f := b.fields[i]
		switch f.num {
		case 1:
			err = b.resource(rs.Resource(), f.bytes(buf))
		case 2:
			err = b.scopeSpans(sss.AppendEmpty(), f.bytes(buf))
		case 3:
			rs.SetSchemaUrl(string(f.bytes(buf)))
		}
		if err != nil {
			return err
		}
	}
	b.fields = b.fields[:start]
	return nil
}

// refuseEntityRefs: Resource field 3, not in the public API.
const refuseEntityRefs = 3

func (b *releaseBuilder) resource(r pcommon.Resource, buf []byte) error {
	var c [17]int32
	start, err := b.scan(buf, &wantResource, refuseEntityRefs, &c)
	if err != nil {
		return err
	}
	attrs := r.Attributes()
	if c[1] > 0 {
		attrs.EnsureCapacity(int(c[1]))
		b.setArena(buf)
	}
	for i, end := start, len(b.fields); i < end; i++ {
		f := b.fields[i]
		switch f.num {
		case 1:
			err = b.keyValue(attrs, f.bytes(buf), 0)
		case 2:
			r.SetDroppedAttributesCount(uint32(f.v))
		}
		if err != nil {
			return err
		}
	}
	b.fields = b.fields[:start]
	return nil
}

func (b *releaseBuilder) scopeSpans(ss ptrace.ScopeSpans, buf []byte) error {
	var c [17]int32
	start, err := b.scan(buf, &wantScopeSpans, 0, &c)
	if err != nil {
		return err
	}
	if c[1] > 1 {
		return errFallback
	}
	spans := ss.Spans()
	if c[2] > 0 {
		spans.EnsureCapacity(int(c[2]))
	}
	for i, end := start, len(b.fields); i < end; i++ {
		f := b.fields[i]
		switch f.num {
		case 1:
			err = b.scope(ss.Scope(), f.bytes(buf))
		case 2:
			err = b.span(spans.AppendEmpty(), f.bytes(buf))
		case 3:
			ss.SetSchemaUrl(string(f.bytes(buf)))
		}
		if err != nil {
			return err
		}
	}
	b.fields = b.fields[:start]
	return nil
}

func (b *releaseBuilder) scope(sc pcommon.InstrumentationScope, buf []byte) error {
	var c [17]int32
	start, err := b.scan(buf, &wantScope, 0, &c)
	if err != nil {
		return err
	}
	attrs := sc.Attributes()
	if c[3] > 0 {
		attrs.EnsureCapacity(int(c[3]))
		b.setArena(buf)
	}
	for i, end := start, len(b.fields); i < end; i++ {
		f := b.fields[i]
		switch f.num {
		case 1:
			sc.SetName(b.intern(f.bytes(buf)))
		case 2:
			sc.SetVersion(b.intern(f.bytes(buf)))
		case 3:
			err = b.keyValue(attrs, f.bytes(buf), 0)
		case 4:
			sc.SetDroppedAttributesCount(uint32(f.v))
		}
		if err != nil {
			return err
		}
	}
	b.fields = b.fields[:start]
	return nil
}

func (b *releaseBuilder) span(sp ptrace.Span, buf []byte) error {
	var c [17]int32
	start, err := b.scan(buf, &wantSpan, 0, &c)
	if err != nil {
		return err
	}
	if c[15] > 1 {
		return errFallback
	}
	b.setArena(buf)
	attrs := sp.Attributes()
	if c[9] > 0 {
		attrs.EnsureCapacity(int(c[9]))
	}
	if c[11] > 0 {
		sp.Events().EnsureCapacity(int(c[11]))
	}
	if c[13] > 0 {
		sp.Links().EnsureCapacity(int(c[13]))
	}
	for i, end := start, len(b.fields); i < end; i++ {
		f := b.fields[i]
		switch f.num {
		case 1:
			var id pcommon.TraceID
			if !copyID(id[:], f.bytes(buf)) {
				return errFallback
			}
			sp.SetTraceID(id)
		case 2:
			var id pcommon.SpanID
			if !copyID(id[:], f.bytes(buf)) {
				return errFallback
			}
			sp.SetSpanID(id)
		case 3:
			sp.TraceState().FromRaw(b.arena.str(f.bytes(buf)))
		case 4:
			var id pcommon.SpanID
			if !copyID(id[:], f.bytes(buf)) {
				return errFallback
			}
			sp.SetParentSpanID(id)
		case 5:
			sp.SetName(b.intern(f.bytes(buf)))
		case 6:
			sp.SetKind(ptrace.SpanKind(int32(f.v)))
		case 7:
			sp.SetStartTimestamp(pcommon.Timestamp(f.v))
		case 8:
			sp.SetEndTimestamp(pcommon.Timestamp(f.v))
		case 9:
			err = b.keyValue(attrs, f.bytes(buf), 0)
		case 10:
			sp.SetDroppedAttributesCount(uint32(f.v))
		case 11:
			err = b.event(sp.Events().AppendEmpty(), f.bytes(buf))
		case 12:
			sp.SetDroppedEventsCount(uint32(f.v))
		case 13:
			err = b.link(sp.Links().AppendEmpty(), f.bytes(buf))
		case 14:
			sp.SetDroppedLinksCount(uint32(f.v))
		case 15:
			err = b.status(sp.Status(), f.bytes(buf))
		case 16:
			sp.SetFlags(uint32(f.v))
		}
		if err != nil {
			return err
		}
	}
	b.fields = b.fields[:start]
	return nil
}

// copyID copies an id as pdata decodes it: empty is the zero id, else it must fill dst.
func copyID(dst, src []byte) bool {
	if len(src) == 0 {
		clear(dst)
		return true
	}
	if len(src) != len(dst) {
		return false
	}
	copy(dst, src)
	return true
}

func (b *releaseBuilder) event(ev ptrace.SpanEvent, buf []byte) error {
	var c [17]int32
	start, err := b.scan(buf, &wantEvent, 0, &c)
	if err != nil {
		return err
	}
	attrs := ev.Attributes()
	if c[3] > 0 {
		attrs.EnsureCapacity(int(c[3]))
	}
	for i, end := start, len(b.fields); i < end; i++ {
		f := b.fields[i]
		switch f.num {
		case 1:
			ev.SetTimestamp(pcommon.Timestamp(f.v))
		case 2:
			ev.SetName(b.intern(f.bytes(buf)))
		case 3:
			err = b.keyValue(attrs, f.bytes(buf), 0)
		case 4:
			ev.SetDroppedAttributesCount(uint32(f.v))
		}
		if err != nil {
			return err
		}
	}
	b.fields = b.fields[:start]
	return nil
}

func (b *releaseBuilder) link(l ptrace.SpanLink, buf []byte) error {
	var c [17]int32
	start, err := b.scan(buf, &wantLink, 0, &c)
	if err != nil {
		return err
	}
	attrs := l.Attributes()
	if c[4] > 0 {
		attrs.EnsureCapacity(int(c[4]))
	}
	for i, end := start, len(b.fields); i < end; i++ {
		f := b.fields[i]
		switch f.num {
		case 1:
			var id pcommon.TraceID
			if !copyID(id[:], f.bytes(buf)) {
				return errFallback
			}
			l.SetTraceID(id)
		case 2:
			var id pcommon.SpanID
			if !copyID(id[:], f.bytes(buf)) {
				return errFallback
			}
			l.SetSpanID(id)
		case 3:
			l.TraceState().FromRaw(b.arena.str(f.bytes(buf)))
		case 4:
			err = b.keyValue(attrs, f.bytes(buf), 0)
		case 5:
			l.SetDroppedAttributesCount(uint32(f.v))
		case 6:
			l.SetFlags(uint32(f.v))
		}
		if err != nil {
			return err
		}
	}
	b.fields = b.fields[:start]
	return nil
}

func (b *releaseBuilder) status(st ptrace.Status, buf []byte) error {
	start, err := b.scan(buf, &wantStatus, 0, nil)
	if err != nil {
		return err
	}
	for i, end := start, len(b.fields); i < end; i++ {
		f := b.fields[i]
		switch f.num {
		case 2:
			st.SetMessage(b.arena.str(f.bytes(buf)))
		case 3:
			st.SetCode(ptrace.StatusCode(int32(f.v)))
		}
	}
	b.fields = b.fields[:start]
	return nil
}
