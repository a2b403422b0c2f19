package tracegen

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

var updateWorkloads = flag.Bool("update-workloads", false,
	"rewrite the release builder's workload files from the generator")

// releaseBuilderWorkloads are the generator's workloads the release builder's differential
// test (traceconsistencyprocessor/internal/engine) decodes, each written as OTLP/JSON, one
// batch per line (the test reads each line back and marshals it as protobuf).
var releaseBuilderWorkloads = map[string]Config{
	"default":    {Seed: 27, Traces: 12},
	"broken":     {Seed: 28, Traces: 24, Broken: AllBrokenKinds(), BrokenEvery: 1},
	"wide_spans": {Seed: 29, Traces: 4, Attributes: 40, EventProbability: 1, ErrorProbability: 0.5},
}

// The committed files are what the generator makes now (regenerate with
// go test ./tracegen -run TestReleaseBuilderWorkloads -update-workloads).
func TestReleaseBuilderWorkloads(t *testing.T) {
	dir := filepath.Join("..", "..", "traceconsistencyprocessor", "internal", "engine", "testdata", "releasebuilder")
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for name, cfg := range releaseBuilderWorkloads {
		t.Run(name, func(t *testing.T) {
			cfg.BaseTime = base
			cfg.Now = func() time.Time { return base }
			batches, _, err := Generate(cfg)
			require.NoError(t, err)
			var raw []byte
			for _, td := range batches {
				b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
				require.NoError(t, err)
				require.NotContains(t, string(b), "\n")
				// The JSON form must give back the very protobuf the generator makes.
				want, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
				require.NoError(t, err)
				back, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(b)
				require.NoError(t, err)
				got, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(back)
				require.NoError(t, err)
				require.True(t, bytes.Equal(want, got), "%s: a batch does not survive OTLP/JSON", name)
				raw = append(append(raw, b...), '\n')
			}
			path := filepath.Join(dir, name+".otlp.json")
			if *updateWorkloads {
				require.NoError(t, os.MkdirAll(dir, 0o755))
				require.NoError(t, os.WriteFile(path, raw, 0o644))
				return
			}
			got, err := os.ReadFile(path)
			require.NoError(t, err)
			require.True(t, bytes.Equal(raw, got), "%s is stale: rerun with -update-workloads", path)
		})
	}
}
