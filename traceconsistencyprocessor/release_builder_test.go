//go:build cgo

package traceconsistencyprocessor

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadatatest"
)

// A released span with a key twice in its attributes (which pdata's decoder keeps and its
// public API cannot build) is decoded by ProtoUnmarshaler, passed on unchanged, and counted
// in release_builder_fallbacks.
func TestReleaseWithDuplicateKeysIsDecodedByProtoUnmarshalerAndCounted(t *testing.T) {
	h := newHarness(t, nil)
	td := makeTraces(span{trace: 1, id: 1, service: "svc", name: "root", start: time.Second, end: time.Millisecond})
	raw, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	require.NoError(t, err)
	// Append a second ResourceSpans whose span repeats one key.
	kv := appendLenField(appendLenField(nil, 1, []byte("dup")), 2, appendLenField(nil, 1, []byte("v")))
	sp := appendLenField(nil, 1, func() []byte { id := traceID(2); return id[:] }())
	sp = appendLenField(sp, 2, func() []byte { id := spanID(1); return id[:] }())
	sp = appendLenField(sp, 5, []byte("dup-root"))
	sp = append(sp, 0x39) // field 7, fixed64: start
	sp = binary.LittleEndian.AppendUint64(sp, uint64(t0.Add(-time.Second).UnixNano()))
	sp = append(sp, 0x41) // field 8, fixed64: end
	sp = binary.LittleEndian.AppendUint64(sp, uint64(t0.Add(-time.Millisecond).UnixNano()))
	sp = appendLenField(appendLenField(sp, 9, kv), 9, kv)
	raw = appendLenField(raw, 1, appendLenField(nil, 2, appendLenField(nil, 2, sp)))
	in, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(raw)
	require.NoError(t, err)
	require.Equal(t, 2, in.ResourceSpans().At(1).ScopeSpans().At(0).Spans().At(0).Attributes().Len())

	h.consume(in)
	h.tick(10 * time.Second)
	require.NoError(t, h.p.Shutdown(t.Context()))
	var dupAttrs int
	for _, out := range h.sink.AllTraces() {
		for _, rs := range out.ResourceSpans().All() {
			for _, ss := range rs.ScopeSpans().All() {
				for _, s := range ss.Spans().All() {
					if s.Name() == "dup-root" {
						dupAttrs = 0
						for k := range s.Attributes().All() {
							if k == "dup" {
								dupAttrs++
							}
						}
					}
				}
			}
		}
	}
	require.Equal(t, 2, dupAttrs, "both copies of the key are passed on")
	metadatatest.AssertEqualProcessorTraceconsistencyReleaseBuilderFallbacks(t, h.tel,
		[]metricdata.DataPoint[int64]{{Value: 1}}, noTimes)
}

func appendLenField(b []byte, num int, data []byte) []byte {
	b = binary.AppendUvarint(b, uint64(num)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(data)))
	return append(b, data...)
}
