//go:build cgo

package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// manyResources builds traces with n resources of spans spans each.
func manyResources(n, spans int) ptrace.Traces {
	td := ptrace.NewTraces()
	for r := 0; r < n; r++ {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", fmt.Sprintf("svc-%d", r))
		ss := rs.ScopeSpans().AppendEmpty()
		ss.Scope().SetName("scope")
		for i := 0; i < spans; i++ {
			sp := ss.Spans().AppendEmpty()
			sp.SetName(fmt.Sprintf("span-%d-%d", r, i))
			sp.SetTraceID([16]byte{byte(r), byte(i), 1})
			sp.SetSpanID([8]byte{byte(r), byte(i), 2})
			sp.Attributes().PutStr("k", "v")
		}
	}
	return td
}

func TestUnmarshalPartsEqualsOneDecode(t *testing.T) {
	td := manyResources(7, 50)
	buf, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	require.NoError(t, err)
	for _, parts := range []int{0, 1, 2, 3, 4, 7, 16} {
		got, fallbacks, err := unmarshalParts(buf, parts)
		require.NoError(t, err, "parts %d", parts)
		require.Zero(t, fallbacks, "parts %d: every part built by the release builder", parts)
		require.Equal(t, td, got, "parts %d", parts)
	}
}

func TestTopLevelCutsSplitEvenlyAtResourceBoundaries(t *testing.T) {
	buf, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(manyResources(8, 20))
	require.NoError(t, err)
	cuts := topLevelCuts(buf, 2)
	require.Len(t, cuts, 1)
	require.InDelta(t, len(buf)/2, cuts[0], float64(len(buf))/8+1)
	for _, parts := range []int{2, 4, 8} {
		cuts := topLevelCuts(buf, parts)
		require.Len(t, cuts, parts-1)
		prev := 0
		for _, c := range cuts {
			require.Greater(t, c, prev)
			// every part decodes on its own
			_, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(buf[prev:c])
			require.NoError(t, err)
			prev = c
		}
	}
	// One resource: nothing to cut.
	one, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(manyResources(1, 100))
	require.NoError(t, err)
	require.Empty(t, topLevelCuts(one, 4))
}

func TestUnmarshalPartsRefusesWhatOneDecodeRefuses(t *testing.T) {
	buf, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(manyResources(4, 10))
	require.NoError(t, err)
	bad := append([]byte(nil), buf...)
	bad = append(bad, 0x0a, 0x05, 0xff) // a field claiming more bytes than remain
	_, _, err = unmarshalParts(bad, 2)
	require.Error(t, err)
	// A malformed ResourceSpans in the second half fails the whole decode.
	cuts := topLevelCuts(buf, 2)
	require.Len(t, cuts, 1)
	corrupt := append([]byte(nil), buf...)
	corrupt[cuts[0]+2] = 0xff // first byte inside the second part's first ResourceSpans
	_, errOne := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(corrupt)
	_, _, errParts := unmarshalParts(corrupt, 2)
	require.Equal(t, errOne != nil, errParts != nil)
}
