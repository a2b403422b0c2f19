//go:build cgo

package engine

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

var now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testConfig() Config {
	c := RustDefaults()
	c.HLCRestart = RestartNone
	return c
}

func newEngine(t *testing.T, c Config) *Engine {
	t.Helper()
	g, err := New(c)
	require.NoError(t, err)
	t.Cleanup(g.Close)
	return g
}

func encode(t *testing.T, td ptrace.Traces) []byte {
	t.Helper()
	b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	require.NoError(t, err)
	return b
}

func oneTrace(service string) ptrace.Traces {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", service)
	ss := rs.ScopeSpans().AppendEmpty().Spans()
	root := ss.AppendEmpty()
	root.SetTraceID(pcommon.TraceID{1, 15: 1})
	root.SetSpanID(pcommon.SpanID{1, 7: 1})
	root.SetName("root")
	root.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Second)))
	root.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Millisecond)))
	child := ss.AppendEmpty()
	root.CopyTo(child)
	child.SetSpanID(pcommon.SpanID{1, 7: 2})
	child.SetParentSpanID(root.SpanID())
	child.SetName("child")
	return td
}

func TestBadInputIsRefusedWithAMessage(t *testing.T) {
	g := newEngine(t, testConfig())
	noSpans := ptrace.NewTraces()
	noSpans.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty()
	cases := map[string]struct {
		data []byte
		code Code
		msg  string
	}{
		"garbage bytes":          {[]byte{0xff, 0xff, 0xff, 0xff}, CodeMalformedInput, "not an OTLP ExportTraceServiceRequest"},
		"truncated message":      {encode(t, oneTrace("svc"))[:20], CodeMalformedInput, "not an OTLP ExportTraceServiceRequest"},
		"request without spans":  {encode(t, noSpans), CodeEmptyInput, "no spans"},
		"zero-length buffer":     {[]byte{}, CodeEmptyInput, "empty input"},
		"nil buffer":             {nil, CodeEmptyInput, "empty input"},
		"empty request (0 byte)": {encode(t, ptrace.NewTraces()), CodeEmptyInput, "empty"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := g.Ingest(tc.data, now)
			require.Error(t, err)
			var ee *Error
			require.True(t, errors.As(err, &ee))
			assert.Equal(t, tc.code, ee.Code)
			assert.True(t, ee.Refused())
			assert.Contains(t, ee.Message, tc.msg)
		})
	}
	s, err := g.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(len(cases)), s.BatchesRefused)
	assert.Zero(t, s.SpansReceived)
}

func TestIngestShutdownDrainRoundTrip(t *testing.T) {
	g := newEngine(t, testConfig())
	res, err := g.Ingest(encode(t, oneTrace("checkout")), now)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), res.Buffered)
	assert.Zero(t, res.ReadySpans)

	ready, err := g.Tick(now.Add(100 * time.Millisecond))
	require.NoError(t, err)
	assert.Zero(t, ready, "quiet_period not over")

	ready, err = g.Shutdown(now.Add(200 * time.Millisecond))
	require.NoError(t, err)
	assert.Equal(t, uint64(2), ready)

	rel, err := g.Drain(100)
	require.NoError(t, err)
	require.NotNil(t, rel)
	assert.Equal(t, uint64(2), rel.Spans)
	assert.Equal(t, 2, rel.Traces.SpanCount())
	require.Len(t, rel.Units, 1)
	assert.Equal(t, ReasonShutdown, rel.Units[0].Reason)
	assert.Equal(t, "shutdown", rel.Units[0].Reason.String())
	assert.Equal(t, uint32(2), rel.Units[0].Spans)
	assert.Equal(t, 200*time.Millisecond, rel.Units[0].Age)

	// The decoded pdata lives in Go memory: it stays valid after the release was freed.
	rs := rel.Traces.ResourceSpans().At(0)
	v, ok := rs.Resource().Attributes().Get("service.name")
	require.True(t, ok)
	assert.Equal(t, "checkout", v.Str())

	rel, err = g.Drain(100)
	require.NoError(t, err)
	assert.Nil(t, rel, "nothing left")
}

func TestFindingCountsCarryServiceNames(t *testing.T) {
	g := newEngine(t, testConfig())
	td := oneTrace("payments")
	sp := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(1)
	sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(time.Hour))) // future_timestamp
	_, err := g.Ingest(encode(t, td), now)
	require.NoError(t, err)
	_, err = g.Shutdown(now)
	require.NoError(t, err)
	rel, err := g.Drain(100)
	require.NoError(t, err)
	require.NotNil(t, rel)
	assert.Contains(t, rel.Findings, FindingCount{Kind: "future_timestamp", Service: "payments", Count: 1})
	require.Len(t, rel.Units, 1)
	assert.NotZero(t, rel.Units[0].Findings&(1<<13))
}

func TestValidateNamesTheYAMLKey(t *testing.T) {
	c := testConfig()
	c.QuietPeriod = -time.Second
	err := Validate(c)
	require.Error(t, err)
	assert.Equal(t, "quiet_period must be a positive duration, got -1s", err.Error())

	c = testConfig()
	c.HLCRestart = RestartPersist
	require.ErrorContains(t, Validate(c), "hlc.state_file")
	c.HLCStateFile = "/tmp/x"
	require.NoError(t, Validate(c))

	_, err = New(Config{})
	require.Error(t, err, "the zero Config is not valid")
}

func TestNamesMatchTheStaticCopies(t *testing.T) {
	assert.Equal(t, staticKindNames, kindNames, "finding kinds in Rust and in types.go differ")
	assert.Equal(t, staticReasonNames, reasonNames, "release reasons in Rust and in types.go differ")
	assert.Len(t, Reasons(), 9)
	mask, err := KindMask([]string{"missing_parent", "clock_skew"})
	require.NoError(t, err)
	assert.Equal(t, uint32(1|1<<10), mask)
	_, err = KindMask([]string{"nope"})
	require.ErrorContains(t, err, `"nope"`)
}

func TestClosedEngineFailsCleanly(t *testing.T) {
	g, err := New(testConfig())
	require.NoError(t, err)
	g.Close()
	g.Close()
	_, err = g.Ingest([]byte{1}, now)
	require.ErrorContains(t, err, "closed")
	_, err = g.Drain(1)
	require.Error(t, err)
	_, err = g.Stats()
	require.Error(t, err)
}

// Stats is read by casting tc_stats: the two must list the same fields in the same order.
func TestStatsHasTheLayoutOfTcStats(t *testing.T) {
	c := cStatsFields()
	g := structFields(reflect.TypeOf(Stats{}))
	require.Len(t, g, len(c), "Stats and tc_stats have different field counts")
	for i := range c {
		want := strings.ReplaceAll(c[i].Name, "_", "")
		got := strings.ToLower(g[i].Name)
		assert.Equal(t, want, got, "field %d: tc_stats.%s vs Stats.%s", i, c[i].Name, g[i].Name)
		assert.Equal(t, c[i].Offset, g[i].Offset, "field %d offset", i)
	}
}

// The reason constants of types.go are the Rust enum's values.
func TestReasonConstantsMatchRust(t *testing.T) {
	for _, r := range []Reason{ReasonComplete, ReasonIdleTimeout, ReasonMaxAge, ReasonMemoryPressure, ReasonSpanLimit, ReasonShutdown, ReasonLate, ReasonUnassembled, ReasonWALFull} {
		assert.Equal(t, staticReasonNames[r], reasonNames[r])
	}
	assert.Equal(t, ReasonWALFull, Reason(len(reasonNames)-1))
	assert.True(t, ReasonWALFull.IsTrace())
	assert.False(t, ReasonUnassembled.IsTrace())
}
