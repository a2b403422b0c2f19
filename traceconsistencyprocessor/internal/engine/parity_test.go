//go:build cgo

package engine

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// nestedBatch is a healthy trace whose root carries one attribute holding `arrays` nested
// arrays (its deepest value sits at level 2*arrays+1, the attribute's KeyValue being 0), and
// `kvlists` more levels of key-value lists under it.
func nestedBatch(arrays, kvlists int) ptrace.Traces {
	td := oneTrace("nested")
	attrs := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0).Attributes()
	s := attrs.PutEmptySlice("deep")
	for i := 1; i < arrays; i++ {
		s = s.AppendEmpty().SetEmptySlice()
	}
	last := s.AppendEmpty()
	for i := 0; i < kvlists; i++ {
		last = last.SetEmptyMap().PutEmpty("k")
	}
	last.SetInt(1)
	return td
}

// The engine accepts exactly what the collector's own decoder (pdata) accepts: for nesting
// around the decoder's limit, both accept or both refuse.
func TestNestingLimitMatchesTheCollectorsDecoder(t *testing.T) {
	g := newEngine(t, testConfig())
	for _, tc := range []struct{ arrays, kvlists int }{
		{44, 0}, {45, 0}, {48, 0}, {49, 0}, {50, 0}, {55, 0},
		{48, 1}, {49, 1}, {47, 2}, {48, 2}, {10, 44}, {10, 45},
	} {
		t.Run(fmt.Sprintf("arrays=%d,kvlists=%d", tc.arrays, tc.kvlists), func(t *testing.T) {
			b := encode(t, nestedBatch(tc.arrays, tc.kvlists))
			_, pdataErr := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(b)
			_, engineErr := g.Ingest(b, now)
			assert.Equal(t, pdataErr == nil, engineErr == nil, "pdata: %v, engine: %v", pdataErr, engineErr)
			if engineErr != nil {
				var ee *Error
				require.ErrorAs(t, engineErr, &ee)
				assert.True(t, ee.Refused(), "a refusal is permanent: %v", engineErr)
			}
		})
	}
}

// The two cases by name: 90 levels pass, 110 are refused by both.
func TestAttributeNested90DeepIsIngestedAnd110Refused(t *testing.T) {
	g := newEngine(t, testConfig())
	deep90 := encode(t, nestedBatch(45, 0))  // deepest level 91
	deep110 := encode(t, nestedBatch(55, 0)) // deepest level 111
	_, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(deep90)
	require.NoError(t, err)
	res, err := g.Ingest(deep90, now)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), res.Buffered)
	_, err = (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(deep110)
	require.Error(t, err, "pdata refuses it")
	_, err = g.Ingest(deep110, now)
	require.Error(t, err, "and so does the engine")
}
