//go:build cgo

package engine

import (
	"runtime"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace"
)

// BenchmarkReleaseDecode decodes the engine's releases of each of the generator's workloads
// (testdata/releasebuilder: default, broken, wide_spans; HLC stamps included) with ProtoUnmarshaler and
// with the release builder, and reports allocations and bytes per released span (these do
// not depend on machine load; the time per op does).
//
//	go test -run XXX -bench ReleaseDecode -benchmem ./internal/engine/
func BenchmarkReleaseDecode(b *testing.B) {
	workloads := workloadBatches(b)
	for _, name := range []string{"default", "broken", "wide_spans"} {
		b.Run(name, func(b *testing.B) { benchmarkReleaseDecode(b, released(b, workloads[name])) })
	}
}

func benchmarkReleaseDecode(b *testing.B, rels [][]byte) {
	spans := 0
	for _, rel := range rels {
		td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(rel)
		if err != nil {
			b.Fatal(err)
		}
		spans += td.SpanCount()
	}
	for _, bc := range []struct {
		name   string
		decode func([]byte) (ptrace.Traces, error)
	}{
		{"proto_unmarshaler", (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces},
		{"release_builder", func(b []byte) (ptrace.Traces, error) { td, _, err := decodeRelease(b); return td, err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				for _, rel := range rels {
					if _, err := bc.decode(rel); err != nil {
						b.Fatal(err)
					}
				}
			}
			runtime.ReadMemStats(&after)
			n := float64(b.N) * float64(spans)
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "allocs/span")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/n, "B/span")
		})
	}
}
