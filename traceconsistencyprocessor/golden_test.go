//go:build cgo

package traceconsistencyprocessor

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/golden"
	"github.com/open-telemetry/opentelemetry-collector-contrib/pkg/pdatatest/ptracetest"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap/confmaptest"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

var update = flag.Bool("update", false, "rewrite testdata/golden/*/expected.yaml from the current output")

// TestGolden feeds testdata/golden/<case>/input.yaml through the processor and compares all
// it passed downstream with expected.yaml. Each resourceSpans entry of the input is ingested
// as its own batch, in order, at the fake clock's start; then the clock moves past
// idle_timeout (one release tick) and the processor shuts down. The fixed clock makes the
// consistency.hlc stamps deterministic, so they are compared too. An optional config.yaml in
// the case directory changes the default configuration.
//
// Regenerate with: go test -run TestGolden -update . (then review the diff by eye).
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "golden", "*"))
	require.NoError(t, err)
	require.NotEmpty(t, dirs)
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			input, err := golden.ReadTraces(filepath.Join(dir, "input.yaml"))
			require.NoError(t, err)

			h := newHarness(t, func(cfg *Config) {
				path := filepath.Join(dir, "config.yaml")
				if _, err := os.Stat(path); err != nil {
					return
				}
				cm, err := confmaptest.LoadConf(path)
				require.NoError(t, err)
				require.NoError(t, cm.Unmarshal(cfg))
			})
			for _, rs := range input.ResourceSpans().All() {
				batch := ptrace.NewTraces()
				rs.CopyTo(batch.ResourceSpans().AppendEmpty())
				h.consume(batch)
			}
			h.tick(10 * time.Second)
			require.NoError(t, h.p.Shutdown(t.Context()))
			actual := mergeTraces(h.sink.AllTraces())

			expectedFile := filepath.Join(dir, "expected.yaml")
			if *update {
				require.NoError(t, golden.WriteTracesToFile(expectedFile, actual))
				t.Logf("wrote %s", expectedFile)
				return
			}
			expected, err := golden.ReadTraces(expectedFile)
			require.NoError(t, err)
			require.NoError(t, ptracetest.CompareTraces(expected, actual,
				ptracetest.IgnoreResourceSpansOrder(),
				ptracetest.IgnoreScopeSpansOrder(),
				ptracetest.IgnoreSpansOrder(),
			))
		})
	}
}

// mergeTraces puts the spans of several downstream calls into one Traces, one entry per
// distinct resource and scope, so that the comparison does not depend on how releases
// were split into calls.
func mergeTraces(all []ptrace.Traces) ptrace.Traces {
	out := ptrace.NewTraces()
	resources := map[string]ptrace.ResourceSpans{}
	scopes := map[string]ptrace.ScopeSpans{}
	for _, td := range all {
		for _, rs := range td.ResourceSpans().All() {
			rkey := keyOf(rs.SchemaUrl(), rs.Resource().Attributes().AsRaw())
			ors, ok := resources[rkey]
			if !ok {
				ors = out.ResourceSpans().AppendEmpty()
				rs.Resource().CopyTo(ors.Resource())
				ors.SetSchemaUrl(rs.SchemaUrl())
				resources[rkey] = ors
			}
			for _, ss := range rs.ScopeSpans().All() {
				skey := rkey + keyOf(ss.SchemaUrl(), ss.Scope().Name(), ss.Scope().Version(), ss.Scope().Attributes().AsRaw())
				oss, ok := scopes[skey]
				if !ok {
					oss = ors.ScopeSpans().AppendEmpty()
					ss.Scope().CopyTo(oss.Scope())
					oss.SetSchemaUrl(ss.SchemaUrl())
					scopes[skey] = oss
				}
				for _, sp := range ss.Spans().All() {
					sp.CopyTo(oss.Spans().AppendEmpty())
				}
			}
		}
	}
	return out
}

func keyOf(parts ...any) string {
	b, err := json.Marshal(parts) // map keys are sorted
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestGoldenFilesExist(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "golden", "*"))
	require.NoError(t, err)
	for _, dir := range dirs {
		for _, f := range []string{"input.yaml", "expected.yaml"} {
			_, err := os.Stat(filepath.Join(dir, f))
			require.NoError(t, err, "every golden case has %s", f)
		}
	}
}
