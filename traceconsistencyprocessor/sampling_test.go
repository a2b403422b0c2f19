//go:build cgo

package traceconsistencyprocessor

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/metadatatest"
)

func TestSamplingErrorsNameTheKey(t *testing.T) {
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "sampling_bad_percentage.yaml"))
	require.NoError(t, err)
	cfg := createDefaultConfig().(*Config)
	require.NoError(t, cm.Unmarshal(cfg))
	require.EqualError(t, cfg.Validate(), "sampling.rules[2].probabilistic.percentage must be between 0 and 100, got 120")

	for _, tc := range []struct {
		sampling map[string]any
		want     string
	}{
		{map[string]any{"rules": []any{map[string]any{"name": "a", "action": "keep"}, map[string]any{"name": "a", "action": "drop"}}},
			`sampling.rules[1].name must be unique, "a" is also the name of sampling.rules[0]`},
		{map[string]any{"default": map[string]any{"action": "rate_limit", "rate_limit": map[string]any{"spans_per_second": 0}}},
			"sampling.default.rate_limit.spans_per_second must be greater than 0, got 0"},
		{map[string]any{"rules": []any{map[string]any{"name": "a", "when": map[string]any{"consistency": map[string]any{"findings": []any{"orphans"}}}, "action": "keep"}}},
			"sampling.rules[0].when.consistency.findings[0] must be one of missing_parent, "},
	} {
		cfg := createDefaultConfig().(*Config)
		cfg.Sampling = tc.sampling
		err := cfg.Validate()
		require.Error(t, err)
		assert.Contains(t, err.Error(), tc.want)
	}
	// No section: no sampling.
	cfg = createDefaultConfig().(*Config)
	require.NoError(t, cfg.Validate())
	b, err := cfg.samplingJSON()
	require.NoError(t, err)
	assert.Nil(t, b)
}

// TestSamplingOnlyKeptTracesReachGo: traces dropped by a rule never leave the engine: the
// next consumer (everything Go unmarshaled) holds only kept traces, and the engine counts
// the dropped ones by rule.
func TestSamplingOnlyKeptTracesReachGo(t *testing.T) {
	h := newHarness(t, func(cfg *Config) {
		cfg.Sampling = map[string]any{
			"rules": []any{map[string]any{
				"name":   "health",
				"when":   map[string]any{"service": map[string]any{"in": []any{"health"}}},
				"action": "drop",
			}},
		}
	})
	const n = 40
	for i := byte(1); i <= n; i++ {
		svc := "shop"
		if i%2 == 0 {
			svc = "health"
		}
		h.consume(makeTraces(span{trace: i, id: 1, service: svc, start: 3 * time.Second, end: 2 * time.Second},
			span{trace: i, id: 2, parent: 1, service: svc, start: 3 * time.Second, end: 2 * time.Second}))
	}
	h.tick(2 * time.Second)
	h.tick(20 * time.Second)
	var got []ptrace.Traces = h.sink.AllTraces()
	ids := map[byte]int{}
	for _, td := range got {
		for k, v := range traceIDsOf(td) {
			ids[k] += v
		}
	}
	require.Len(t, ids, n/2, "only the shop traces reach Go: %v", ids)
	for id, spans := range ids {
		assert.Equal(t, 1, int(id)%2, "trace %d", id)
		assert.Equal(t, 2, spans)
	}
	counts, err := h.p.eng.SamplingCounts()
	require.NoError(t, err)
	require.Len(t, counts, 2)
	assert.Equal(t, uint64(n/2), counts[0].DroppedTraces)
	assert.Equal(t, uint64(n), counts[0].DroppedSpans)
	assert.Equal(t, uint64(n/2), counts[1].KeptTraces)
	assert.Equal(t, []string{"health", "default"}, h.p.cfg.samplingRuleNames())
	assert.Equal(t, fmt.Sprint(n), fmt.Sprint(spanCount(got)))

	h.tick(time.Second) // the counts of the last drain reach the metrics
	attrs := func(rule, decision string) attribute.Set {
		return attribute.NewSet(attribute.String("rule", rule), attribute.String("decision", decision))
	}
	metadatatest.AssertEqualProcessorTraceconsistencySamplingTraces(t, h.tel, []metricdata.DataPoint[int64]{
		{Value: n / 2, Attributes: attrs("health", "dropped")},
		{Value: n / 2, Attributes: attrs("default", "kept")},
	}, noTimes)
	metadatatest.AssertEqualProcessorTraceconsistencySamplingSpans(t, h.tel, []metricdata.DataPoint[int64]{
		{Value: n, Attributes: attrs("health", "dropped")},
		{Value: n, Attributes: attrs("default", "kept")},
	}, noTimes)
}
