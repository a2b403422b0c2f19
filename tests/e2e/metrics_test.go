package e2e

import (
	"slices"
	"strings"
	"testing"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
)

// These tests cover the metrics helpers and the config rendering additions;
// they need no collector binary.

func TestParseMetrics(t *testing.T) {
	text := `# HELP otelcol_processor_traceconsistency_traces_released Traces released.
# TYPE otelcol_processor_traceconsistency_traces_released counter
otelcol_processor_traceconsistency_traces_released{reason="complete"} 25
otelcol_processor_traceconsistency_traces_released{reason="idle_timeout"} 2
otelcol_processor_traceconsistency_findings_total{kind="clock_skew",service_name="a \"b\"\\c"} 3 1700000000000
otelcol_processor_traceconsistency_spans_buffered 0
otelcol_processor_traceconsistency_hlc_max_forward_offset 3.590157677671e+12

otelcol_receiver_accepted_spans{receiver="otlp",transport="grpc"} 846
`
	m, err := ParseMetrics(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Samples) != 6 {
		t.Fatalf("got %d samples, want 6: %+v", len(m.Samples), m.Samples)
	}
	if got := m.Sum(names.MetricTracesReleased); got != 27 {
		t.Errorf("Sum(traces_released) = %v", got)
	}
	if got := m.Sum(names.MetricTracesReleased, "reason", "idle_timeout"); got != 2 {
		t.Errorf("Sum(traces_released, idle_timeout) = %v", got)
	}
	// _total suffix accepted; escapes decoded.
	f := m.Find(names.MetricFindings, "kind", "clock_skew")
	if len(f) != 1 || f[0].Value != 3 || f[0].Labels["service_name"] != `a "b"\c` {
		t.Errorf("Find(findings) = %+v", f)
	}
	if !m.Has(names.MetricSpansBuffered) || m.Sum(names.MetricSpansBuffered) != 0 {
		t.Errorf("spans_buffered not found as 0")
	}
	if m.Has(names.MetricSpansBuffered, "reason", "x") {
		t.Errorf("Has with a non-matching label returned true")
	}
	if got := m.LabelValues(names.MetricTracesReleased, "reason"); !slices.Equal(got, []string{"complete", "idle_timeout"}) {
		t.Errorf("LabelValues = %v", got)
	}
	if got := m.Sum(names.MetricAcceptedSpans); got != 846 {
		t.Errorf("accepted spans = %v", got)
	}
	if g := m.Grep("spans_buffered"); !strings.Contains(g, "spans_buffered 0") {
		t.Errorf("Grep = %q", g)
	}
	for _, bad := range []string{`x{a="b} 1`, `x{a=b} 1`, `x`, `x{a="b"} nope`} {
		if _, err := ParseMetrics(bad); err == nil {
			t.Errorf("ParseMetrics(%q) succeeded", bad)
		}
	}
}

func TestRenderConfigExtraExporters(t *testing.T) {
	base := ConfigOptions{OTLPEndpoint: "a", HealthEndpoint: "b", MetricsPort: 1, OutputPath: "/tmp/o.jsonl"}
	plain := RenderConfig(base)
	if !strings.Contains(plain, "      exporters: [file]\n") {
		t.Errorf("default exporters changed:\n%s", plain)
	}
	opts := base
	opts.ExtraExportersYAML = "otlp_grpc/next:\n  endpoint: 127.0.0.1:9\n"
	opts.Exporters = []string{"otlp_grpc/next"}
	cfg := RenderConfig(opts)
	for _, want := range []string{
		"    flush_interval: 50ms\n  otlp_grpc/next:\n    endpoint: 127.0.0.1:9\nextensions:\n",
		"      exporters: [otlp_grpc/next]\n",
		"    path: /tmp/o.jsonl\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
}
