package e2e

import (
	"fmt"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// TestAgentQueueSurvivesRestartWhileGatewayIsDown: delivery between tiers, with retries,
// is the exporter's job, not the processor's: a sending queue persistent on file_storage
// (README.md, "Behaviour to know", downstream failures; examples/collector-agent.yaml).
// The agent assembles and releases traces while the gateway is
// unreachable; they wait in the persistent queue; the agent is stopped and started again;
// once the gateway is up every span arrives there exactly once, each trace whole.
func TestAgentQueueSurvivesRestartWhileGatewayIsDown(t *testing.T) {
	requireProcessor(t)
	bin := RequireBinary(t)
	RequireComponents(t, bin, "exporters/otlp_grpc", "extensions/file_storage")

	gatewayAddr := FreeAddr(t) // nothing listens here until the gateway starts
	queueDir := t.TempDir()
	agentOpts := func() ConfigOptions {
		return ConfigOptions{
			ProcessorsYAML: TraceConsistencyYAML("quiet_period: 200ms", "release_tick: 50ms", "idle_timeout: 2s", NoRestartWait),
			ExtraExportersYAML: fmt.Sprintf(`otlp_grpc/gateway:
  endpoint: %s
  tls:
    insecure: true
  sending_queue:
    enabled: true
    storage: file_storage/queue
  retry_on_failure:
    enabled: true
    initial_interval: 100ms
    max_interval: 500ms
    max_elapsed_time: 0
`, gatewayAddr),
			Exporters:           []string{"otlp_grpc/gateway"},
			ExtraExtensionsYAML: fmt.Sprintf("file_storage/queue:\n  directory: %s\n", queueDir),
		}
	}

	agent := StartCollectorWith(t, agentOpts())
	g := tracegen.MustNew(tracegen.Config{Seed: 777, Traces: 40, Services: 3, BaseTime: time.Now().Add(-10 * time.Second)})
	res := sendSDK(t, agent, g)
	want := res.Truth.Records()
	// Every span released by the processor into the (unreachable) exporter's queue.
	agent.WaitForMetrics(30*time.Second, "all spans released to the exporter", func(m Metrics) bool {
		return int(m.Sum(names.MetricSpansReleased)) == want
	})
	if err := agent.Stop(); err != nil {
		t.Fatalf("stopping the agent: %v", err)
	}

	gatewayOpts := ConfigOptions{
		ProcessorsYAML: TraceConsistencyYAML("quiet_period: 200ms", "release_tick: 50ms", "idle_timeout: 2s", NoRestartWait),
		OTLPEndpoint:   gatewayAddr,
	}
	gateway := StartCollectorWith(t, gatewayOpts)
	restarted := StartCollectorWith(t, agentOpts())
	gateway.WaitForSpans(want, 60*time.Second)
	if err := restarted.Stop(); err != nil {
		t.Errorf("stopping the restarted agent: %v", err)
	}
	recs := Spans(gateway.StopAndRead())

	el := newErrorLimiter(t)
	defer el.Summary()
	wantCounts, _ := expectedCounts(g, res.Truth)
	checkCounts(el, recs, wantCounts)
	for _, tt := range res.Truth.Traces {
		mine := filterTrace(recs, tt.TraceID)
		if lines := lineSet(mine); len(lines) != 1 {
			el.Errorf("split trace", "trace %v arrived in lines %v, want one", tt.TraceID, lines)
		}
	}
}

func filterTrace(recs []SpanRecord, id pcommon.TraceID) []SpanRecord {
	var out []SpanRecord
	for _, r := range recs {
		if r.Key.TraceID == id {
			out = append(out, r)
		}
	}
	return out
}
