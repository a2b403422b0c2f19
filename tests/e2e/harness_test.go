package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// These tests cover the harness itself and need no collector binary.

func TestParseComponents(t *testing.T) {
	out := []byte(`buildinfo:
    command: otelcol-traceconsistency
receivers:
    - name: otlp
      module: go.opentelemetry.io/collector/receiver/otlpreceiver v0.165.0
processors:
    - name: traceconsistency
      module: github.com/traceconsistency/traceconsistency/traceconsistencyprocessor v0.0.0
exporters:
    - name: file
    - name: debug
extensions:
    - name: health_check
`)
	got := parseComponents(out)
	if !slices.Equal(got["processors"], []string{"traceconsistency"}) ||
		!slices.Equal(got["exporters"], []string{"file", "debug"}) ||
		!slices.Equal(got["extensions"], []string{"health_check"}) ||
		!slices.Equal(got["receivers"], []string{"otlp"}) {
		t.Fatalf("parseComponents = %v", got)
	}
}

func TestRenderConfig(t *testing.T) {
	procs := TraceConsistencyYAML("quiet_period: 200ms", "idle_timeout: 3s") + "batch: {}\n"
	if got := TopLevelKeys(procs); !slices.Equal(got, []string{"traceconsistency", "batch"}) {
		t.Fatalf("TopLevelKeys = %v", got)
	}
	cfg := RenderConfig(ConfigOptions{
		ProcessorsYAML: procs, OTLPEndpoint: "127.0.0.1:1111", HealthEndpoint: "127.0.0.1:2222",
		MetricsPort: 3333, OutputPath: "/tmp/x.jsonl",
	})
	for _, want := range []string{
		"        endpoint: 127.0.0.1:1111\n",
		"  traceconsistency:\n    quiet_period: 200ms\n    idle_timeout: 3s\n  batch: {}\n",
		"    endpoint: 127.0.0.1:2222\n",
		"                port: 3333\n",
		"      processors: [traceconsistency, batch]\n",
		"    path: /tmp/x.jsonl\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %q:\n%s", want, cfg)
		}
	}
	empty := RenderConfig(ConfigOptions{Pipeline: []string{}, OTLPEndpoint: "a", HealthEndpoint: "b", MetricsPort: 1, OutputPath: "c"})
	if !strings.Contains(empty, "processors:\n  {}\n") || !strings.Contains(empty, "processors: []") {
		t.Errorf("empty processors rendered wrongly:\n%s", empty)
	}
}

func TestFreePortIsLoopbackAndUsable(t *testing.T) {
	a := FreeAddr(t)
	if !strings.HasPrefix(a, "127.0.0.1:") {
		t.Fatalf("FreeAddr = %q", a)
	}
	if err := tracegen.CheckLoopback(a); err != nil {
		t.Fatal(err)
	}
}

func TestOutputReaderPartialLines(t *testing.T) {
	batches, truth, err := tracegen.Generate(tracegen.Config{Seed: 1, Traces: 5, SpansPerBatch: 20})
	if err != nil {
		t.Fatal(err)
	}
	var m ptrace.JSONMarshaler
	var data []byte
	for _, td := range batches {
		b, err := m.MarshalTraces(td)
		if err != nil {
			t.Fatal(err)
		}
		data = append(append(data, b...), '\n')
	}
	path := filepath.Join(t.TempDir(), "out.jsonl")
	r := NewOutputReader(path)
	if err := r.Poll(); err != nil { // file absent yet
		t.Fatal(err)
	}
	// Write in odd-sized pieces, polling in between, as a buffered file
	// writer flushing mid-line would.
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for off := 0; off < len(data); off += 777 {
		if _, err := f.Write(data[off:min(off+777, len(data))]); err != nil {
			t.Fatal(err)
		}
		if err := r.Poll(); err != nil {
			t.Fatal(err)
		}
	}
	lines := r.Lines()
	if len(lines) != len(batches) {
		t.Fatalf("got %d lines, want %d", len(lines), len(batches))
	}
	if got := SpanCount(lines); got != truth.Records() {
		t.Fatalf("got %d spans, want %d", got, truth.Records())
	}
	recs := Spans(lines)
	keys := truth.Keys()
	for _, rec := range recs {
		if _, ok := keys[rec.Key]; !ok {
			t.Fatalf("unknown key %v", rec.Key)
		}
	}
	for _, tt := range truth.Traces {
		head, ok := TraceHead(ByTrace(recs)[tt.TraceID])
		if !ok || head.Key.SpanID != tt.RootSpanID {
			t.Fatalf("TraceHead of %s = %v, want root %s", tt.TraceID, head.Key, tt.RootSpanID)
		}
	}
}

func TestBinaryPathDefault(t *testing.T) {
	t.Setenv(EnvBinary, "")
	want := filepath.Join(RepoRoot(), "build", "otelcol", "otelcol-traceconsistency")
	if got := BinaryPath(); got != want {
		t.Fatalf("BinaryPath = %s, want %s", got, want)
	}
	if _, err := os.Stat(filepath.Join(RepoRoot(), "tests", "go.mod")); err != nil {
		t.Fatalf("RepoRoot %s does not look like the repo root: %v", RepoRoot(), err)
	}
	t.Setenv(EnvBinary, "/abs/bin")
	if got := BinaryPath(); got != "/abs/bin" {
		t.Fatalf("BinaryPath = %s", got)
	}
}
