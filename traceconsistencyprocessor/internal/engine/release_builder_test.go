//go:build cgo

package engine

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/ptracetest"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// buildOnce runs the builder alone (no fallback) on buf.
func buildOnce(buf []byte) (ptrace.Traces, error) {
	b := getBuilder()
	defer putBuilder(b)
	return b.build(buf)
}

// requireSameDecode checks that decodeRelease gives what ProtoUnmarshaler gives on buf: the
// same error-or-not, and equal pdata (structurally, by ptracetest, and by the bytes
// ProtoMarshaler makes of both). It reports whether the builder decoded buf itself (false:
// it left buf to ProtoUnmarshaler).
func requireSameDecode(t testing.TB, buf []byte) bool {
	t.Helper()
	want, wantErr := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(buf)
	built, buildErr := buildOnce(buf)
	if buildErr != nil {
		require.ErrorIs(t, buildErr, errFallback)
	} else {
		require.NoError(t, wantErr, "the builder accepted what ProtoUnmarshaler refuses")
		requireEqualTraces(t, want, built)
	}
	got, fellBack, err := decodeRelease(buf)
	require.Equal(t, buildErr != nil, fellBack)
	if wantErr != nil {
		require.Error(t, err)
		require.Equal(t, wantErr.Error(), err.Error())
		return false
	}
	require.NoError(t, err)
	requireEqualTraces(t, want, got)
	return buildErr == nil
}

func requireEqualTraces(t testing.TB, want, got ptrace.Traces) {
	t.Helper()
	require.Equal(t, want, got)
	require.NoError(t, ptracetest.CompareTraces(want, got))
	m := &ptrace.ProtoMarshaler{}
	wb, err := m.MarshalTraces(want)
	require.NoError(t, err)
	gb, err := m.MarshalTraces(got)
	require.NoError(t, err)
	require.True(t, bytes.Equal(wb, gb), "ProtoMarshaler bytes differ")
}

// released feeds batches through an engine (refused ones are skipped), shuts it down and
// returns the bytes of every release it drained.
func released(t testing.TB, batches [][]byte) [][]byte {
	t.Helper()
	g, err := New(testConfig())
	require.NoError(t, err)
	defer g.Close()
	var out [][]byte
	releaseBytesSeen = func(b []byte) { out = append(out, bytes.Clone(b)) }
	defer func() { releaseBytesSeen = nil }()
	for _, b := range batches {
		_, _ = g.Ingest(b, now)
	}
	_, err = g.Shutdown(now.Add(time.Minute))
	require.NoError(t, err)
	for {
		rel, err := g.Drain(1 << 20)
		require.NoError(t, err)
		if rel == nil {
			return out
		}
	}
}

// everyField is a trace that sets every field of the OTLP trace model, with every kind of
// attribute value, nested ones and bytes included.
func everyField() ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.SetSchemaUrl("https://opentelemetry.io/schemas/1.26.0")
	res := rs.Resource()
	res.SetDroppedAttributesCount(3)
	putEveryValue(res.Attributes())
	ss := rs.ScopeSpans().AppendEmpty()
	ss.SetSchemaUrl("https://example.com/scope-schema")
	ss.Scope().SetName("io.opentelemetry.contrib")
	ss.Scope().SetVersion("1.2.3")
	ss.Scope().SetDroppedAttributesCount(1)
	ss.Scope().Attributes().PutStr("scope.attr", "x")
	root := ss.Spans().AppendEmpty()
	root.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	root.SetSpanID(pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8})
	root.TraceState().FromRaw("vendor=abc,other=1")
	root.SetFlags(0x301)
	root.SetName("GET /checkout")
	root.SetKind(ptrace.SpanKindServer)
	root.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Second)))
	root.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Millisecond)))
	putEveryValue(root.Attributes())
	root.SetDroppedAttributesCount(7)
	root.SetDroppedEventsCount(8)
	root.SetDroppedLinksCount(9)
	root.Status().SetCode(ptrace.StatusCodeError)
	root.Status().SetMessage("boom")
	ev := root.Events().AppendEmpty()
	ev.SetName("exception")
	ev.SetTimestamp(pcommon.NewTimestampFromTime(now.Add(-500 * time.Millisecond)))
	ev.SetDroppedAttributesCount(2)
	putEveryValue(ev.Attributes())
	root.Events().AppendEmpty().SetName("bare")
	ln := root.Links().AppendEmpty()
	ln.SetTraceID(pcommon.TraceID{9, 15: 9})
	ln.SetSpanID(pcommon.SpanID{9, 7: 9})
	ln.TraceState().FromRaw("k=v")
	ln.SetFlags(1)
	ln.SetDroppedAttributesCount(4)
	putEveryValue(ln.Attributes())
	root.Links().AppendEmpty()
	child := ss.Spans().AppendEmpty()
	child.SetTraceID(root.TraceID())
	child.SetSpanID(pcommon.SpanID{2, 7: 2})
	child.SetParentSpanID(root.SpanID())
	child.SetName("SELECT")
	child.SetKind(ptrace.SpanKindClient)
	child.SetStartTimestamp(root.StartTimestamp() + 10)
	child.SetEndTimestamp(root.EndTimestamp() - 10)
	child.Status().SetCode(ptrace.StatusCodeOk)
	// An empty resource and an empty scope.
	td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	return td
}

func putEveryValue(m pcommon.Map) {
	m.PutStr("str", "value")
	m.PutStr("empty.str", "")
	m.PutInt("int", -42)
	m.PutInt("int.max", math.MaxInt64)
	m.PutDouble("double", 3.25)
	m.PutDouble("-inf", math.Inf(-1))
	m.PutDouble("-zero", math.Copysign(0, -1))
	m.PutBool("bool", true)
	m.PutBool("false", false)
	m.PutEmpty("empty")
	m.PutEmptyBytes("bytes").FromRaw([]byte{0, 1, 2, 255})
	m.PutEmptyBytes("empty.bytes")
	s := m.PutEmptySlice("slice")
	s.AppendEmpty().SetStr("a")
	s.AppendEmpty().SetInt(1)
	s.AppendEmpty()
	s.AppendEmpty().SetEmptyBytes().FromRaw([]byte("b"))
	s.AppendEmpty().SetEmptyMap().PutStr("in", "slice")
	s.AppendEmpty().SetEmptySlice().AppendEmpty().SetDouble(1.5)
	m.PutEmptySlice("empty.slice")
	kv := m.PutEmptyMap("map")
	kv.PutStr("k", "v")
	kv.PutEmptyMap("nested").PutEmptySlice("deeper").AppendEmpty().SetBool(true)
	m.PutEmptyMap("empty.map")
	m.PutStr(strings.Repeat("long-key-", 20), strings.Repeat("long-value-", 50))
}

// goldenBatches reads every input.yaml of the processor's golden cases, one batch per
// resourceSpans entry, as TestGolden sends them.
func goldenBatches(t testing.TB) [][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "golden*", "*", "input.yaml"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var out [][]byte
	for _, f := range files {
		td, err := golden.ReadTraces(f)
		require.NoError(t, err, f)
		for _, rs := range td.ResourceSpans().All() {
			one := ptrace.NewTraces()
			rs.CopyTo(one.ResourceSpans().AppendEmpty())
			out = append(out, encodeTB(t, one))
		}
	}
	return out
}

// workloadBatches reads the generator's workloads committed in testdata/releasebuilder
// (written by tests/tracegen's TestReleaseBuilderWorkloads): OTLP/JSON, one batch per line,
// each marshalled as protobuf (tracegen checks that this gives the generator's bytes).
func workloadBatches(t testing.TB) map[string][][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", "releasebuilder", "*.otlp.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	out := map[string][][]byte{}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		require.NoError(t, err)
		for _, line := range bytes.Split(raw, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(line)
			require.NoError(t, err, f)
			b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
			require.NoError(t, err, f)
			out[strings.TrimSuffix(filepath.Base(f), ".otlp.json")] = append(out[strings.TrimSuffix(filepath.Base(f), ".otlp.json")], b)
		}
	}
	return out
}

// corpusFiles returns every file of every fuzz corpus of the repository.
func corpusFiles(t testing.TB) [][]byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "..", "..", "fuzz", "corpus", "*", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	var out [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		out = append(out, b)
	}
	return out
}

// requireBuiltAll checks every release the engine made of batches, and that the builder
// decoded each itself.
func requireBuiltAll(t *testing.T, batches [][]byte) int {
	t.Helper()
	rels := released(t, batches)
	require.NotEmpty(t, rels)
	spans := 0
	for _, rel := range rels {
		require.True(t, requireSameDecode(t, rel), "the builder left an engine release to ProtoUnmarshaler")
		td, err := buildOnce(rel)
		require.NoError(t, err)
		spans += td.SpanCount()
	}
	return spans
}

func TestReleaseBuilderMatchesProtoUnmarshalerOnEveryField(t *testing.T) {
	raw := encode(t, everyField())
	require.True(t, requireSameDecode(t, raw))
	requireBuiltAll(t, [][]byte{raw})
}

// NaN is not equal to itself, so only the bytes compare it.
func TestReleaseBuilderKeepsNaN(t *testing.T) {
	td := oneTrace("nan")
	td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes().PutDouble("nan", math.NaN())
	raw := encode(t, td)
	got, err := buildOnce(raw)
	require.NoError(t, err)
	require.Equal(t, raw, encode(t, got))
}

func TestReleaseBuilderMatchesProtoUnmarshalerOnGoldenInputs(t *testing.T) {
	batches := goldenBatches(t)
	for _, b := range batches {
		require.True(t, requireSameDecode(t, b))
	}
	require.Positive(t, requireBuiltAll(t, batches))
}

func TestReleaseBuilderMatchesProtoUnmarshalerOnGeneratorWorkloads(t *testing.T) {
	for name, batches := range workloadBatches(t) {
		t.Run(name, func(t *testing.T) {
			for _, b := range batches {
				require.True(t, requireSameDecode(t, b))
			}
			spans := requireBuiltAll(t, batches)
			require.Positive(t, spans)
		})
	}
}

// Every fuzz corpus file: directly (most are not OTLP; the two must agree anyway), with its
// first bytes cut off (the corpora of the ABI targets put a header before the OTLP), and
// through the engine, which releases what it accepts.
func TestReleaseBuilderMatchesProtoUnmarshalerOnFuzzCorpora(t *testing.T) {
	files := corpusFiles(t)
	var accepted [][]byte
	for _, b := range files {
		requireSameDecode(t, b)
		for cut := 1; cut <= 16 && cut < len(b); cut++ {
			requireSameDecode(t, b[cut:])
		}
		if _, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(b); err == nil {
			accepted = append(accepted, b)
		}
	}
	require.NotEmpty(t, accepted, "no corpus file is OTLP")
	rels := released(t, accepted)
	require.NotEmpty(t, rels, "the engine released none of the corpus")
	for _, rel := range rels {
		require.True(t, requireSameDecode(t, rel), "the builder left an engine release to ProtoUnmarshaler")
	}
}

// Inputs the builder leaves to ProtoUnmarshaler, each still decoded exactly as it decodes.
func TestReleaseBuilderFallsBackWhereThePublicAPIDiffers(t *testing.T) {
	base := encode(t, everyField())
	kv := func(key string, value []byte) []byte {
		return appendLen(appendLen(nil, 1, []byte(key)), 2, value)
	}
	strValue := appendLen(nil, 1, []byte("v"))
	span := func(fields ...[]byte) []byte {
		return appendLen(nil, 1, appendLen(nil, 2, appendLen(nil, 2, bytes.Join(fields, nil))))
	}
	cases := map[string][]byte{
		"duplicate attribute key": span(appendLen(nil, 9, kv("k", strValue)), appendLen(nil, 9, kv("k", strValue))),
		"status twice":            span(appendLen(nil, 15, []byte{0x18, 2}), appendLen(nil, 15, []byte{0x12, 1, 'm'})),
		"value twice":             span(appendLen(nil, 9, append(kv("k", strValue), appendLen(nil, 2, []byte{0x18, 1})...))),
		"two oneof fields":        span(appendLen(nil, 9, kv("k", append(append([]byte{}, strValue...), 0x18, 1)))),
		"string table index":      span(appendLen(nil, 9, kv("k", []byte{0x40, 3}))),
		"key string index":        span(appendLen(nil, 9, []byte{0x18, 1})),
		"deprecated scope spans":  appendLen(nil, 1, appendLen(nil, 1000, appendLen(nil, 2, nil))),
		"resource twice":          appendLen(nil, 1, append(appendLen(nil, 1, nil), appendLen(nil, 1, nil)...)),
		"entity ref":              appendLen(nil, 1, appendLen(nil, 1, appendLen(nil, 3, nil))),
		"group":                   append(append([]byte{}, base...), 0x0b, 0x0c),
		"trace id of 3 bytes":     span(appendLen(nil, 1, []byte{1, 2, 3})),
		"truncated":               base[:len(base)-3],
		"wrong wire type":         span([]byte{0x28, 1}),
		"field zero":              append([]byte{0x00}, base...),
		"nested too deep":         encode(t, nestedBatch(55, 0)),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			require.False(t, requireSameDecode(t, b))
			if _, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(b); err == nil {
				_, fallbacks, err := unmarshalParts(b, 1)
				require.NoError(t, err)
				require.Equal(t, 1, fallbacks, "a fallback is counted")
			}
		})
	}
	// Unknown fields are skipped, as ProtoUnmarshaler skips them.
	unknown := span([]byte{0xf8, 0x01, 7}, appendLen(nil, 99, []byte("x")), []byte{0xfd, 0x01, 1, 2, 3, 4}, []byte{0xf9, 0x01, 1, 2, 3, 4, 5, 6, 7, 8})
	require.True(t, requireSameDecode(t, unknown))
	// A repeated scalar: the last wins, in both.
	require.True(t, requireSameDecode(t, span(appendLen(nil, 5, []byte("a")), appendLen(nil, 5, []byte("b")))))
}

func encodeTB(t testing.TB, td ptrace.Traces) []byte {
	t.Helper()
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	require.NoError(t, err)
	return b
}

// Nesting around ProtoUnmarshaler's recursion limit: the builder builds what it accepts and
// leaves what it refuses (with its error).
func TestReleaseBuilderNestingUpToTheLimit(t *testing.T) {
	for arrays := 40; arrays <= 52; arrays++ {
		for kvlists := 0; kvlists <= 3; kvlists++ {
			b := encode(t, nestedBatch(arrays, kvlists))
			_, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(b)
			built := requireSameDecode(t, b)
			require.Equal(t, err == nil, built, "arrays %d, kvlists %d: %v", arrays, kvlists, err)
		}
	}
	for kvlists := 40; kvlists <= 52; kvlists++ {
		b := encode(t, nestedBatch(1, kvlists))
		_, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(b)
		require.Equal(t, err == nil, requireSameDecode(t, b), "kvlists %d: %v", kvlists, err)
	}
}

// appendLen appends field num as a length-delimited field holding data.
func appendLen(b []byte, num int, data []byte) []byte {
	b = binary.AppendUvarint(b, uint64(num)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(data)))
	return append(b, data...)
}

func TestReleaseBuilderInternTableIsBounded(t *testing.T) {
	b := getBuilder()
	defer putBuilder(b)
	for i := 0; i < 3*internMax; i++ {
		b.intern(binary.AppendUvarint([]byte("k"), uint64(i)))
		require.LessOrEqual(t, len(b.names), internMax)
	}
	s1 := b.intern([]byte("service.name"))
	s2 := b.intern([]byte("service.name"))
	require.Equal(t, s1, s2)
	require.Equal(t, 0, int(testing.AllocsPerRun(10, func() { b.intern([]byte("service.name")) })))
}

// Strings sharing a set of the intern cache: each interned string has the bytes asked for,
// the last two of a set are shared without a map lookup or an allocation, a third evicts
// the older, and all stay right after the table behind the cache is cleared.
func TestReleaseBuilderInternCacheSharesASetCorrectly(t *testing.T) {
	b := getBuilder()
	defer putBuilder(b)
	var same [][]byte
	want := internSet([]byte("http.request.method"))
	for i := 0; len(same) < 3; i++ {
		for _, p := range [][]byte{fmt.Appendf(nil, "app.attr.s%d", i), fmt.Appendf(nil, "k%d", i)} {
			if internSet(p) == want && len(same) < 3 {
				same = append(same, p)
			}
		}
	}
	for round := 0; round < 3; round++ {
		for _, p := range same {
			require.Equal(t, string(p), b.intern(p))
			require.Equal(t, string(p), b.intern(bytes.Clone(p)))
		}
	}
	x, y := same[1], same[2] // the two last put in the set
	require.Equal(t, string(y), b.recent[want][0])
	require.Equal(t, string(x), b.recent[want][1])
	for range 2 {
		require.Equal(t, string(x), b.intern(x))
		require.Equal(t, string(y), b.intern(y))
	}
	require.Equal(t, 0, int(testing.AllocsPerRun(10, func() { b.intern(x); b.intern(y) })))
	require.Same(t, unsafe.StringData(b.intern(x)), unsafe.StringData(b.intern(bytes.Clone(x))))
	clear(b.names)
	for _, p := range append(same, []byte("http.request.method")) {
		require.Equal(t, string(p), b.intern(p))
	}
	long := bytes.Repeat([]byte("a"), internMaxLen+1)
	require.Equal(t, string(long), b.intern(long))
	require.Equal(t, string(long), b.intern(long))
	for i := range b.recent {
		for _, s := range b.recent[i] {
			require.LessOrEqual(t, len(s), internMaxLen, "a long string is not cached")
		}
	}
}

// KeyValues and AnyValues near the short encodings the builder reads without scan (one-byte
// tags and lengths, key then value, one string, bool or int): each decoded as
// ProtoUnmarshaler decodes it, the ones it refuses left to it.
func TestReleaseBuilderShortEncodingsAndTheirNeighbours(t *testing.T) {
	kvs := map[string][]byte{
		"short":                   appendLen(appendLen(nil, 1, []byte("k")), 2, appendLen(nil, 1, []byte("v"))),
		"empty key and value":     appendLen(appendLen(nil, 1, nil), 2, nil),
		"value before key":        appendLen(appendLen(nil, 2, appendLen(nil, 1, []byte("v"))), 1, []byte("k")),
		"key only":                appendLen(nil, 1, []byte("k")),
		"value only":              appendLen(nil, 2, appendLen(nil, 1, []byte("v"))),
		"key of 128 bytes":        appendLen(appendLen(nil, 1, bytes.Repeat([]byte("k"), 128)), 2, appendLen(nil, 1, []byte("v"))),
		"value of 200 bytes":      appendLen(appendLen(nil, 1, []byte("k")), 2, appendLen(nil, 1, bytes.Repeat([]byte("v"), 200))),
		"trailing unknown field":  append(appendLen(appendLen(nil, 1, []byte("k")), 2, appendLen(nil, 1, []byte("v"))), 0x20, 1),
		"value length past end":   append(appendLen(nil, 1, []byte("k")), 0x12, 5, 0x0a),
		"empty value, key again":  append(appendLen(appendLen(nil, 1, []byte("k")), 2, nil), appendLen(nil, 1, []byte("v"))...),
		"key twice":               appendLen(appendLen(appendLen(nil, 1, []byte("a")), 1, []byte("k")), 2, appendLen(nil, 1, []byte("v"))),
		"int":                     appendLen(appendLen(nil, 1, []byte("k")), 2, []byte{0x18, 7}),
		"negative int":            appendLen(appendLen(nil, 1, []byte("k")), 2, binary.AppendUvarint([]byte{0x18}, math.MaxUint64)),
		"int of 11 bytes":         appendLen(appendLen(nil, 1, []byte("k")), 2, []byte{0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}),
		"truncated int":           appendLen(appendLen(nil, 1, []byte("k")), 2, []byte{0x18, 0x80}),
		"bool":                    appendLen(appendLen(nil, 1, []byte("k")), 2, []byte{0x10, 1}),
		"bool of 2 bytes":         appendLen(appendLen(nil, 1, []byte("k")), 2, []byte{0x10, 0x80, 0x01}),
		"int then string":         appendLen(appendLen(nil, 1, []byte("k")), 2, appendLen([]byte{0x18, 1}, 1, []byte("v"))),
		"string then trailing":    appendLen(appendLen(nil, 1, []byte("k")), 2, append(appendLen(nil, 1, []byte("v")), 0x48, 1)),
		"string of 2-byte length": appendLen(appendLen(nil, 1, []byte("k")), 2, append([]byte{0x0a, 0x81, 0x00}, 'v')),
		"string with wrong wire":  appendLen(appendLen(nil, 1, []byte("k")), 2, []byte{0x08, 1}),
		"string index":            appendLen(appendLen(nil, 1, []byte("k")), 2, []byte{0x40, 1}),
		"double":                  appendLen(appendLen(nil, 1, []byte("k")), 2, []byte{0x21, 0, 0, 0, 0, 0, 0, 0xf0, 0x3f}),
	}
	for name, kv := range kvs {
		t.Run(name, func(t *testing.T) {
			span := append(appendLen(nil, 5, []byte("op")), appendLen(nil, 9, kv)...)
			span = append(span, appendLen(nil, 9, appendLen(appendLen(nil, 1, []byte("other")), 2, []byte{0x18, 2}))...)
			requireSameDecode(t, appendLen(nil, 1, appendLen(nil, 2, appendLen(nil, 2, span))))
			list := appendLen(appendLen(nil, 1, []byte("list")), 2, appendLen(nil, 6, appendLen(nil, 1, kv)))
			requireSameDecode(t, appendLen(nil, 1, appendLen(nil, 1, appendLen(nil, 1, list))))
		})
	}
	_, err := buildOnce(appendLen(nil, 1, appendLen(nil, 2, appendLen(nil, 2, appendLen(nil, 9, kvs["short"])))))
	require.NoError(t, err, "the short encoding is built")
}

// A builder keeps its scratch of fields for the next release, unless a release made it
// larger than an idle builder may keep.
func TestReleaseBuilderScratchIsBounded(t *testing.T) {
	var span []byte
	for i := 0; i < 2*maxIdleFields; i++ {
		span = appendLen(span, 9, appendLen(appendLen(nil, 1, fmt.Appendf(nil, "k%d", i)), 2, []byte{0x18, 1}))
	}
	buf := appendLen(nil, 1, appendLen(nil, 2, appendLen(nil, 2, span)))
	require.True(t, requireSameDecode(t, buf))
	b := &releaseBuilder{names: make(map[string]string)}
	_, err := b.build(buf)
	require.NoError(t, err)
	require.Greater(t, cap(b.fields), maxIdleFields)
	b.idle()
	require.Zero(t, cap(b.fields))
	_, err = b.build(encode(t, oneTrace("svc")))
	require.NoError(t, err)
	kept := cap(b.fields)
	require.NotZero(t, kept)
	b.idle()
	require.Equal(t, kept, cap(b.fields))
}

// The builder on engine output and on raw bytes: always what ProtoUnmarshaler gives. Its
// seeds (testdata/fuzz/FuzzReleaseBuilder) run as a normal test.
func FuzzReleaseBuilder(f *testing.F) {
	f.Add(encodeTB(f, everyField()))
	f.Add(encodeTB(f, oneTrace("svc")))
	f.Fuzz(func(t *testing.T, b []byte) {
		requireSameDecode(t, b)
		if _, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(b); err != nil {
			return
		}
		for _, rel := range released(t, [][]byte{b}) {
			requireSameDecode(t, rel)
		}
	})
}

// A release decoded in parts: only the part the builder cannot build goes to
// ProtoUnmarshaler, and the whole equals one ProtoUnmarshaler decode.
func TestReleaseBuilderFallsBackPerPart(t *testing.T) {
	buf := encode(t, manyResources(6, 20))
	kv := appendLen(appendLen(nil, 1, []byte("k")), 2, appendLen(nil, 1, []byte("v")))
	dup := appendLen(nil, 2, appendLen(nil, 2, append(appendLen(nil, 9, kv), appendLen(nil, 9, kv)...)))
	buf = appendLen(buf, 1, dup)
	want, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(buf)
	require.NoError(t, err)
	got, fallbacks, err := unmarshalParts(buf, 4)
	require.NoError(t, err)
	require.Equal(t, 1, fallbacks)
	requireEqualTraces(t, want, got)
}
