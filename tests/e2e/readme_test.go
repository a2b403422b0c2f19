package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/internal/tracegencli"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// exampleEnv returns the environment that points examples/collector.yaml at
// free loopback ports and a temp output file, and the addresses it then
// uses. It fails the test when the config reads an ${env:...} address or
// path this test does not set, so a new one cannot silently bind a fixed
// port.
func exampleEnv(t *testing.T, configPath string) ([]string, ConfigOptions) {
	t.Helper()
	addrs := ConfigOptions{
		OTLPEndpoint:   FreeAddr(t),
		HealthEndpoint: FreeAddr(t),
		MetricsPort:    FreePort(t),
		OutputPath:     filepath.Join(t.TempDir(), "traces.jsonl"),
	}
	set := map[string]string{
		"TC_OTLP_GRPC_ENDPOINT": addrs.OTLPEndpoint,
		"TC_OTLP_HTTP_ENDPOINT": FreeAddr(t),
		"TC_HEALTH_ENDPOINT":    addrs.HealthEndpoint,
		"TC_PPROF_ENDPOINT":     FreeAddr(t),
		"TC_METRICS_HOST":       "127.0.0.1",
		"TC_METRICS_PORT":       strconv.Itoa(addrs.MetricsPort),
		"TC_TRACES_FILE":        addrs.OutputPath,
	}
	cfg, err := os.ReadFile(configPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`\$\{env:([A-Za-z0-9_]+)(?::-([^}]*))?\}`).FindAllStringSubmatch(string(cfg), -1) {
		name, def := m[1], m[2]
		if _, ok := set[name]; ok {
			continue
		}
		if strings.Contains(def, ":") || strings.Contains(def, "/") || strings.HasSuffix(name, "_PORT") {
			t.Fatalf("%s reads ${env:%s} (default %q), an address or path this test does not override; add it to exampleEnv", configPath, name, def)
		}
	}
	var env []string
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	slices.Sort(env)
	return env, addrs
}

// TestReadmeTracegenCommands is the README's promise, as a fresh user runs
// it: the collector started on examples/collector.yaml as `make run` does
// (only its addresses and output file moved to free loopback ports and a
// temp dir), then every `tracegen` command line of README.md ("Sending it
// traces"; -help left out) run twice in a row. Every trace must come out
// whole, once, released `complete` — or `idle_timeout` for the broken
// traces that can never be complete (missing_parent, two_roots) — with no
// late spans (each run draws a fresh seed, so the second run's traces are
// new) and no findings on healthy traces (generated traces end before they
// are sent, so not even future_timestamp).
func TestReadmeTracegenCommands(t *testing.T) {
	requireProcessor(t)
	config := filepath.Join(RepoRoot(), "examples", "collector.yaml")
	env, addrs := exampleEnv(t, config)
	c := StartCollectorFromFile(t, config, env, addrs)

	cmds, err := tracegencli.CommandLines(filepath.Join(RepoRoot(), "README.md"), tracegencli.ReadmePrefix)
	if err != nil {
		t.Fatal(err)
	}
	cmds = slices.DeleteFunc(cmds, func(c tracegencli.Command) bool {
		return slices.Contains(c.Args, "-help") || slices.Contains(c.Args, "-h") || slices.Contains(c.Args, "--help")
	})
	if len(cmds) < 2 {
		t.Fatalf("README.md has %d tracegen command lines that send, want at least 2", len(cmds))
	}

	type sentTrace struct {
		broken  tracegen.BrokenKind
		records int // records the collector must release (an exact duplicate is dropped)
		run     string
	}
	sent := map[pcommon.TraceID]sentTrace{}
	want := 0
	seeds := map[int64]string{}
	for round := 1; round <= 2; round++ {
		for _, cmd := range cmds {
			run := fmt.Sprintf("round %d, README.md:%d", round, cmd.Line)
			// The README's endpoint is `make run`'s; a later -endpoint wins.
			args := append(slices.Clone(cmd.Args), "-endpoint", c.OTLPEndpoint)
			var stderr bytes.Buffer
			o, err := tracegencli.Parse(args, &stderr)
			if err != nil {
				t.Fatalf("%s: %s: %v %s", run, cmd.Text, err, stderr.String())
			}
			if o.SeedGiven {
				t.Fatalf("%s: README command gives -seed; a second run would send the same traces: %s", run, cmd.Text)
			}
			if prev, dup := seeds[o.Seed]; dup {
				t.Fatalf("%s drew seed %d again (first in %s)", run, o.Seed, prev)
			}
			seeds[o.Seed] = run
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			res, err := tracegencli.Send(ctx, o)
			cancel()
			if err != nil || res.Stopped {
				t.Fatalf("%s: %s: sent %d traces, stopped early %v: %v", run, cmd.Text, res.Traces, res.Stopped, err)
			}
			if res.Traces != o.Config.Traces || res.Spans != res.Truth.Records() {
				t.Fatalf("%s: sent %d/%d traces, %d of %d records acknowledged", run, res.Traces, o.Config.Traces, res.Spans, res.Truth.Records())
			}
			for _, tt := range res.Truth.Traces {
				if prev, dup := sent[tt.TraceID]; dup {
					t.Fatalf("%s sent trace %s again (first in %s)", run, tt.TraceID, prev.run)
				}
				n := tt.Records
				if tt.Broken == tracegen.DuplicateSpan {
					n--
				}
				sent[tt.TraceID] = sentTrace{broken: tt.Broken, records: n, run: run}
				want += n
			}
			t.Logf("%s: seed %d, %d traces, %d span records (%s)", run, o.Seed, res.Traces, res.Spans, o.Mode)
		}
	}

	// idle_timeout is 10s with the example config; allow for it and the sends.
	c.WaitForSpans(want, 60*time.Second)
	lines := c.StopAndRead()

	el := newErrorLimiter(t)
	byTrace := ByTrace(Spans(lines))
	reasons := map[string]int{}
	for id, st := range sent {
		recs := byTrace[id]
		if len(recs) != st.records {
			el.Errorf("span count", "trace %s (%s, %q): %d spans released, want %d", id, st.run, st.broken, len(recs), st.records)
			continue
		}
		if ls := lineSet(recs); len(ls) != 1 {
			el.Errorf("split", "trace %s (%s, %q) released over lines %v, want one", id, st.run, st.broken, ls)
		}
		reason, _ := FindTraceAttr(recs, names.AttrReleaseReason)
		reasons[reason]++
		wantReason := names.ReasonComplete
		if st.broken == tracegen.MissingParent || st.broken == tracegen.TwoRoots {
			wantReason = names.ReasonIdleTimeout
		}
		if reason != wantReason {
			el.Errorf("release reason", "trace %s (%s, %q): %s=%q, want %q", id, st.run, st.broken, names.AttrReleaseReason, reason, wantReason)
		}
		for _, r := range recs {
			if late, _ := AttrString(r.Span, names.AttrLate); late == "true" {
				el.Errorf("late", "trace %s (%s): span %v came out as a late span", id, st.run, r.Key)
			}
		}
		if st.broken != tracegen.FutureTimestamp {
			// Generated traces end before they are sent: no span is ahead of
			// the collector's clock, broken traces (skewed_child) included.
			for _, r := range recs {
				if f, _ := attrStrings(r.Span, names.AttrSpanFindings); slices.Contains(f, "future_timestamp") {
					el.Errorf("future", "trace %s (%s, %q): span %s ends in the future of the collector", id, st.run, st.broken, r.Span.Name())
				}
			}
		}
		if st.broken != "" {
			continue
		}
		if status, _ := FindTraceAttr(recs, names.AttrTraceStatus); status != names.StatusConsistent {
			f, _ := traceAttrStrings(recs, names.AttrTraceFindings)
			el.Errorf("healthy findings", "healthy trace %s (%s): %s=%q, findings %v", id, st.run, names.AttrTraceStatus, status, f)
		}
		for _, r := range recs {
			if f, ok := attrStrings(r.Span, names.AttrSpanFindings); ok {
				el.Errorf("healthy span findings", "healthy trace %s (%s): span %s has findings %v", id, st.run, r.Span.Name(), f)
			}
		}
	}
	for id := range byTrace {
		if _, ok := sent[id]; !ok {
			el.Errorf("unexpected trace", "trace %s in the output was never sent", id)
		}
	}
	t.Logf("%d traces, %d spans released; reasons %s", len(sent), want, fmtCounts(reasons))
}
