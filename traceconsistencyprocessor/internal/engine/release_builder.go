package engine

import (
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
//   - every repeated field gets its exact capacity before the first append (a walk over the
//     message's tags counts its children), so no slice grows by append;
//   - attribute keys, span, event and scope names come from a bounded intern table (one per
//     builder, cleared when full), so a repeated key costs no allocation;
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

// releaseBuilder holds what one decode reuses: the intern table. Not safe for concurrent
// use; decodeRelease takes one from a free list.
type releaseBuilder struct {
	names map[string]string
	arena arena
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
	b.arena = arena{}
	buildersMu.Lock()
	if len(builders) < maxIdleBuilders {
		builders = append(builders, b)
	}
	buildersMu.Unlock()
}

// intern returns p as a string shared with earlier equal strings of this builder.
func (b *releaseBuilder) intern(p []byte) string {
	if len(p) == 0 {
		return ""
	}
	if len(p) > internMaxLen {
		return b.arena.str(p)
	}
	if s, ok := b.names[string(p)]; ok {
		return s
	}
	if len(b.names) >= internMax {
		clear(b.names)
	}
	s := string(p)
	b.names[s] = s
	return s
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
func refuseDeprecatedScopeSpans(n int32) bool { return n == 1000 }

// build decodes buf, or returns errFallback.
func (b *releaseBuilder) build(buf []byte) (ptrace.Traces, error) {
	c, err := counts(buf, &wantRequest, nil)
	if err != nil {
		return ptrace.Traces{}, err
	}
	td := ptrace.NewTraces()
	rss := td.ResourceSpans()
	if c[1] > 0 {
		rss.EnsureCapacity(c[1])
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		if f.num == 1 {
			if err := b.resourceSpans(rss.AppendEmpty(), f.data); err != nil {
				return ptrace.Traces{}, err
			}
		}
	}
	return td, nil
}

func (b *releaseBuilder) resourceSpans(rs ptrace.ResourceSpans, buf []byte) error {
	c, err := counts(buf, &wantResourceSpans, refuseDeprecatedScopeSpans)
	if err != nil {
		return err
	}
	if c[1] > 1 {
		return errFallback
	}
	sss := rs.ScopeSpans()
	if c[2] > 0 {
		sss.EnsureCapacity(c[2])
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		switch f.num {
		case 1:
			err = b.resource(rs.Resource(), f.data)
		case 2:
			err = b.scopeSpans(sss.AppendEmpty(), f.data)
		case 3:
			rs.SetSchemaUrl(string(f.data))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *releaseBuilder) resource(r pcommon.Resource, buf []byte) error {
	c, err := counts(buf, &wantResource, nil)
	if err != nil {
		return err
	}
	if c[3] > 0 { // entity refs: not in the public API
		return errFallback
	}
	attrs := r.Attributes()
	if c[1] > 0 {
		attrs.EnsureCapacity(c[1])
		b.setArena(buf)
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		switch f.num {
		case 1:
			err = b.keyValue(attrs, f.data, 0)
		case 2:
			r.SetDroppedAttributesCount(uint32(f.v))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *releaseBuilder) scopeSpans(ss ptrace.ScopeSpans, buf []byte) error {
	c, err := counts(buf, &wantScopeSpans, nil)
	if err != nil {
		return err
	}
	if c[1] > 1 {
		return errFallback
	}
	spans := ss.Spans()
	if c[2] > 0 {
		spans.EnsureCapacity(c[2])
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		switch f.num {
		case 1:
			err = b.scope(ss.Scope(), f.data)
		case 2:
			err = b.span(spans.AppendEmpty(), f.data)
		case 3:
			ss.SetSchemaUrl(string(f.data))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *releaseBuilder) scope(sc pcommon.InstrumentationScope, buf []byte) error {
	c, err := counts(buf, &wantScope, nil)
	if err != nil {
		return err
	}
	attrs := sc.Attributes()
	if c[3] > 0 {
		attrs.EnsureCapacity(c[3])
		b.setArena(buf)
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		switch f.num {
		case 1:
			sc.SetName(b.intern(f.data))
		case 2:
			sc.SetVersion(b.intern(f.data))
		case 3:
			err = b.keyValue(attrs, f.data, 0)
		case 4:
			sc.SetDroppedAttributesCount(uint32(f.v))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *releaseBuilder) span(sp ptrace.Span, buf []byte) error {
	c, err := counts(buf, &wantSpan, nil)
	if err != nil {
		return err
	}
	if c[15] > 1 {
		return errFallback
	}
	b.setArena(buf)
	if c[9] > 0 {
		sp.Attributes().EnsureCapacity(c[9])
	}
	if c[11] > 0 {
		sp.Events().EnsureCapacity(c[11])
	}
	if c[13] > 0 {
		sp.Links().EnsureCapacity(c[13])
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		switch f.num {
		case 1:
			var id pcommon.TraceID
			if !copyID(id[:], f.data) {
				return errFallback
			}
			sp.SetTraceID(id)
		case 2:
			var id pcommon.SpanID
			if !copyID(id[:], f.data) {
				return errFallback
			}
			sp.SetSpanID(id)
		case 3:
			sp.TraceState().FromRaw(b.arena.str(f.data))
		case 4:
			var id pcommon.SpanID
			if !copyID(id[:], f.data) {
				return errFallback
			}
			sp.SetParentSpanID(id)
		case 5:
			sp.SetName(b.intern(f.data))
		case 6:
			sp.SetKind(ptrace.SpanKind(int32(f.v)))
		case 7:
			sp.SetStartTimestamp(pcommon.Timestamp(f.v))
		case 8:
			sp.SetEndTimestamp(pcommon.Timestamp(f.v))
		case 9:
			err = b.keyValue(sp.Attributes(), f.data, 0)
		case 10:
			sp.SetDroppedAttributesCount(uint32(f.v))
		case 11:
			err = b.event(sp.Events().AppendEmpty(), f.data)
		case 12:
			sp.SetDroppedEventsCount(uint32(f.v))
		case 13:
			err = b.link(sp.Links().AppendEmpty(), f.data)
		case 14:
			sp.SetDroppedLinksCount(uint32(f.v))
		case 15:
			err = b.status(sp.Status(), f.data)
		case 16:
			sp.SetFlags(uint32(f.v))
		}
		if err != nil {
			return err
		}
	}
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
	c, err := counts(buf, &wantEvent, nil)
	if err != nil {
		return err
	}
	if c[3] > 0 {
		ev.Attributes().EnsureCapacity(c[3])
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		switch f.num {
		case 1:
			ev.SetTimestamp(pcommon.Timestamp(f.v))
		case 2:
			ev.SetName(b.intern(f.data))
		case 3:
			err = b.keyValue(ev.Attributes(), f.data, 0)
		case 4:
			ev.SetDroppedAttributesCount(uint32(f.v))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *releaseBuilder) link(l ptrace.SpanLink, buf []byte) error {
	c, err := counts(buf, &wantLink, nil)
	if err != nil {
		return err
	}
	if c[4] > 0 {
		l.Attributes().EnsureCapacity(c[4])
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		switch f.num {
		case 1:
			var id pcommon.TraceID
			if !copyID(id[:], f.data) {
				return errFallback
			}
			l.SetTraceID(id)
		case 2:
			var id pcommon.SpanID
			if !copyID(id[:], f.data) {
				return errFallback
			}
			l.SetSpanID(id)
		case 3:
			l.TraceState().FromRaw(b.arena.str(f.data))
		case 4:
			err = b.keyValue(l.Attributes(), f.data, 0)
		case 5:
			l.SetDroppedAttributesCount(uint32(f.v))
		case 6:
			l.SetFlags(uint32(f.v))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *releaseBuilder) status(st ptrace.Status, buf []byte) error {
	if _, err := counts(buf, &wantStatus, nil); err != nil {
		return err
	}
	for pos := 0; pos < len(buf); {
		f, p, _ := next(buf, pos)
		pos = p
		switch f.num {
		case 2:
			st.SetMessage(b.arena.str(f.data))
		case 3:
			st.SetCode(ptrace.StatusCode(int32(f.v)))
		}
	}
	return nil
}
