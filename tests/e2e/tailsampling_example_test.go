package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// TestTailSamplingExample runs examples/collector-tailsampling.yaml, the topology the README
// recommends for sampling whole traces (traceconsistency -> tail_sampling, decision_wait
// 1s), as a user starts it (only its addresses and output file moved to free loopback ports
// and a temp dir). Healthy traces carry no error span, so only the 10 % probabilistic policy
// keeps them; every broken trace carries a finding and must be kept by the findings policy.
// Every trace that comes out comes out whole, on one output line.
func TestTailSamplingExample(t *testing.T) {
	requireProcessor(t)
	config := filepath.Join(RepoRoot(), "examples", "collector-tailsampling.yaml")
	env, addrs := exampleEnv(t, config)
	c := StartCollectorFromFile(t, config, env, addrs)

	g, err := tracegen.New(tracegen.Config{
		Seed:             11,
		Traces:           400,
		ErrorProbability: -1,
		Broken:           []tracegen.BrokenKind{tracegen.SkewedChild, tracegen.SampledMismatch, tracegen.MissingParent},
		BrokenEvery:      4,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	res, err := tracegen.SendPData(ctx, g, tracegen.SendOptions{Endpoint: c.OTLPEndpoint, Concurrency: 2})
	cancel()
	if err != nil || res.Stopped {
		t.Fatalf("sent %d traces, stopped early %v: %v", res.Traces, res.Stopped, err)
	}
	broken := map[pcommon.TraceID]tracegen.TraceTruth{}
	records := map[pcommon.TraceID]int{}
	for _, tt := range res.Truth.Traces {
		records[tt.TraceID] = tt.Records
		if tt.Broken != "" {
			broken[tt.TraceID] = tt
		}
	}
	// A missing_parent trace leaves after idle_timeout (10s), then decision_wait (1s).
	c.WaitFor(45*time.Second, "every broken trace sampled", func(lines []Line) bool {
		byTrace := ByTrace(Spans(lines))
		for id := range broken {
			if len(byTrace[id]) == 0 {
				return false
			}
		}
		return true
	})
	// Healthy traces were released about as early as the broken ones that were complete:
	// give tail_sampling's last decisions one more second.
	time.Sleep(1500 * time.Millisecond)
	byTrace := ByTrace(Spans(c.StopAndRead()))

	el := newErrorLimiter(t)
	healthyKept := 0
	for id, recs := range byTrace {
		want, sent := records[id]
		if !sent {
			el.Errorf("unexpected trace", "trace %s in the output was never sent", id)
			continue
		}
		if len(recs) != want {
			el.Errorf("span count", "trace %s: %d spans out, %d sent", id, len(recs), want)
		}
		if ls := lineSet(recs); len(ls) != 1 {
			el.Errorf("split", "trace %s came out over lines %v, want one", id, ls)
		}
		status, _ := FindTraceAttr(recs, names.AttrTraceStatus)
		if tt, ok := broken[id]; ok {
			if status != names.StatusInconsistent {
				el.Errorf("broken status", "trace %s (%s): %s=%q", id, tt.Broken, names.AttrTraceStatus, status)
			}
			continue
		}
		healthyKept++
	}
	el.Summary()
	healthy := len(records) - len(broken)
	// 10 % of 300 healthy traces: 30 expected; far outside 5..75 means the policy is not
	// what the example says.
	if healthyKept < 5 || healthyKept > 75 {
		t.Errorf("kept %d of %d healthy traces, want about 10 %%", healthyKept, healthy)
	}
	t.Logf("kept %d broken traces (all), %d of %d healthy traces", len(broken), healthyKept, healthy)
}
