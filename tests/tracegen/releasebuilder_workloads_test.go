package tracegen

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
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
// test (traceconsistencyprocessor/internal/engine) decodes, each written as OTLP batches.
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
				b, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
				require.NoError(t, err)
				raw = binary.AppendUvarint(raw, uint64(len(b)))
				raw = append(raw, b...)
			}
			path := filepath.Join(dir, name+".otlp.gz")
			if *updateWorkloads {
				var z bytes.Buffer
				zw, err := gzip.NewWriterLevel(&z, gzip.BestCompression)
				require.NoError(t, err)
				_, err = zw.Write(raw)
				require.NoError(t, err)
				require.NoError(t, zw.Close())
				require.NoError(t, os.MkdirAll(dir, 0o755))
				require.NoError(t, os.WriteFile(path, z.Bytes(), 0o644))
				return
			}
			f, err := os.Open(path)
			require.NoError(t, err)
			defer f.Close()
			zr, err := gzip.NewReader(f)
			require.NoError(t, err)
			var got bytes.Buffer
			_, err = got.ReadFrom(zr)
			require.NoError(t, err)
			require.True(t, bytes.Equal(raw, got.Bytes()), "%s is stale: rerun with -update-workloads", path)
		})
	}
}
