package e2e

// Real auto-instrumented applications against the built collector at its documented
// defaults: Python (Flask, opentelemetry-instrument) -> Node.js (Express,
// auto-instrumentations-node) -> Java (JDK HTTP server, opentelemetry-javaagent) -> Go
// (otelhttp, otlptracehttp), with a fan-out, slow and failing requests, an uninstrumented
// callee and an SQLite leaf; every export passes through an OTLP proxy that records the
// ground truth and injects faults. See tests/README.md, "Real applications".
//
// Runs only with REALAPPS_DIR set (make test-realapps, make realapps-report).
// REALAPPS_REPORT_ONLY=1 reports without failing on the targets; REALAPPS_LONG=1 runs the
// long version (>= 2,000 traces); REALAPPS_TRACES=N sends N traces per scenario instead.

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
)

// realappsScenario is one cold start of the collector and the four services.
type realappsScenario struct {
	Name string
	// Delay is every SDK's OTEL_BSP_SCHEDULE_DELAY in ms (0: unset, the SDKs' default 5 s).
	Delay int
	// Traces is how many requests the frontend gets.
	Traces int
	// Faults are spread over the traces by their trace ID (see faultOf); empty: healthy.
	Faults []faultKind
	// Skew runs the Node.js service under faketime with this offset ("+0.3"), announcing a
	// host of its own (host.name, host.id in OTEL_RESOURCE_ATTRIBUTES): a service on another
	// machine whose clock runs ahead.
	Skew string
	// Knobs are the processor's settings (TraceConsistencyYAML); none: its defaults.
	Knobs []string
	// Restart, when set, is restarted half-way with OTEL_BSP_SCHEDULE_DELAY RestartDelay
	// (-1: unset, the default): a service whose export schedule changes mid-run.
	Restart      string
	RestartDelay int
}

// skewCorrectionKnob switches the processor's skew correction on.
const skewCorrectionKnob = "checks: {skew_correction: {enabled: true}}"

// realappsConcurrency is how many requests are in flight at the frontend.
const realappsConcurrency = 6

func realappsScenarios(long bool) []realappsScenario {
	allFaults := []faultKind{faultDropParent, faultDuplicate, faultConflict, faultFlagFlip, faultTwoRoots}
	if long {
		return []realappsScenario{
			{Name: "healthy_default_delay", Traces: 700},
			{Name: "healthy_200ms", Delay: 200, Traces: 700},
			{Name: "delay_change_go_200ms_to_default", Delay: 200, Traces: 200, Restart: svcGo, RestartDelay: -1},
			{Name: "anomalies_default_delay", Traces: 300, Faults: allFaults},
			{Name: "anomalies_200ms", Delay: 200, Traces: 300, Faults: allFaults},
			{Name: "clock_skew_node_300ms_ahead", Delay: 200, Traces: 150, Skew: "+0.3"},
			{Name: "clock_skew_corrected", Delay: 200, Traces: 100, Skew: "+0.3", Knobs: []string{skewCorrectionKnob}},
		}
	}
	return []realappsScenario{
		{Name: "healthy_default_delay", Traces: 260},
		{Name: "healthy_200ms", Delay: 200, Traces: 260},
		{Name: "delay_change_go_200ms_to_default", Delay: 200, Traces: 80, Restart: svcGo, RestartDelay: -1},
		{Name: "anomalies_200ms", Delay: 200, Traces: 150, Faults: allFaults},
		{Name: "clock_skew_node_300ms_ahead", Delay: 200, Traces: 60, Skew: "+0.3"},
		{Name: "clock_skew_corrected", Delay: 200, Traces: 40, Skew: "+0.3", Knobs: []string{skewCorrectionKnob}},
	}
}

// faultOf spreads faults over trace IDs: about half the traces get one of them, in turn.
func faultOf(faults []faultKind) func(pcommon.TraceID) faultKind {
	if len(faults) == 0 {
		return nil
	}
	return func(id pcommon.TraceID) faultKind {
		b := int(id[15])
		if b%2 == 1 {
			return faultNone
		}
		return faults[(b/2)%len(faults)]
	}
}

func realappsReportOnly() bool { return os.Getenv("REALAPPS_REPORT_ONLY") == "1" }

func TestRealApps(t *testing.T) {
	buildDir := os.Getenv("REALAPPS_DIR")
	if buildDir == "" {
		t.Skip("REALAPPS_DIR not set: the real applications run with `make test-realapps` / `make realapps-report`")
	}
	src, err := filepath.Abs("../realapps")
	if err != nil {
		t.Fatal(err)
	}
	dirs := realappsDirs{Build: buildDir, Src: src}
	if err := dirs.check(); err != nil {
		t.Fatalf("real applications not installed: %v", err)
	}
	RequireBinary(t)
	long := os.Getenv("REALAPPS_LONG") == "1"
	var reports []*scenarioReport
	for _, sc := range realappsScenarios(long) {
		sc := sc
		if n, err := strconv.Atoi(os.Getenv("REALAPPS_TRACES")); err == nil && n > 0 {
			sc.Traces = n // a quick look at the harness itself
		}
		t.Run(sc.Name, func(t *testing.T) {
			r := runRealappsScenario(t, dirs, sc)
			reports = append(reports, r)
			r.assert(t)
		})
	}
	writeRealappsSummary(t, buildDir, reports)
}

// request is one request of the load and the trace it made.
type request struct {
	ID      int
	Query   string
	Status  int
	TraceID pcommon.TraceID
	Err     string
}

func realappsQuery(i int) string {
	q := fmt.Sprintf("id=%d", i)
	if i%5 == 1 {
		q += "&fanout=3"
	}
	if i%7 == 3 {
		q += "&slow=300"
	}
	if i%10 == 5 {
		q += "&fail=1"
	}
	if i%3 == 0 {
		q += "&uninstr=1"
	}
	if i%2 == 0 {
		q += "&lookup=1"
	}
	return q
}

func runRealappsScenario(t *testing.T, dirs realappsDirs, sc realappsScenario) *scenarioReport {
	// The collector at its documented defaults (examples/collector.yaml: memory_limiter,
	// batch, traceconsistency with no knobs), fresh per scenario: a cold start.
	col := StartCollectorWith(t, ConfigOptions{
		ProcessorsYAML: "memory_limiter:\n  check_interval: 1s\n  limit_mib: 1024\n  spike_limit_mib: 256\n" +
			"batch:\n  timeout: 200ms\n  send_batch_size: 8192\n" + TraceConsistencyYAML(sc.Knobs...),
	})
	proxy := startOTLPProxy(t, col.OTLPEndpoint, faultOf(sc.Faults))
	// Read the output all along: a line's SeenAt is the release time the latency uses.
	stopPoll := make(chan struct{})
	pollDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopPoll:
				pollDone <- nil
				return
			case <-tick.C:
				if err := col.Output().Poll(); err != nil {
					pollDone <- err
					return
				}
			}
		}
	}()
	defer func() {
		select {
		case <-stopPoll:
		default:
			close(stopPoll)
		}
	}()
	plain := startPlainEndpoint(t)
	ports := map[string]int{svcPython: FreePort(t), svcNode: FreePort(t), svcJava: FreePort(t), svcGo: FreePort(t)}
	url := func(s string) string { return fmt.Sprintf("http://127.0.0.1:%d", ports[s]) }
	env := map[string]string{
		"REALAPPS_NODE_URL":   url(svcNode),
		"REALAPPS_JAVA_URL":   url(svcJava),
		"REALAPPS_GO_URL":     url(svcGo),
		"REALAPPS_PLAIN_URL":  plain,
		"REALAPPS_PYTHON_URL": url(svcPython),
	}
	svcs := map[string]*service{}
	for _, name := range []string{svcGo, svcJava, svcNode, svcPython} {
		spec := serviceSpec{Name: name, Port: ports[name], Delay: sc.Delay}
		senv := env
		if name == svcNode && sc.Skew != "" {
			spec.Faketime = sc.Skew
			senv = map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "host.name=realapps-skewed-host,host.id=realapps-skewed-host"}
			for k, v := range env {
				senv[k] = v
			}
		}
		svcs[name] = startService(t, dirs, spec, proxy.URL, senv)
	}
	for _, name := range []string{svcGo, svcJava, svcNode, svcPython} {
		svcs[name].waitListening(t, 120*time.Second)
	}

	client := &http.Client{Timeout: 60 * time.Second}
	var reqs []request
	first, second := sc.Traces, 0
	if sc.Restart != "" {
		first = sc.Traces / 2
		second = sc.Traces - first
	}
	reqs = append(reqs, sendLoad(client, url(svcPython), 0, first)...)
	if second > 0 {
		svcs[sc.Restart].stop()
		delay := sc.RestartDelay
		if delay < 0 {
			delay = 0
		}
		svcs[sc.Restart] = startService(t, dirs, serviceSpec{Name: sc.Restart, Port: ports[sc.Restart], Delay: delay}, proxy.URL, env)
		svcs[sc.Restart].waitListening(t, 120*time.Second)
		reqs = append(reqs, sendLoad(client, url(svcPython), first, second)...)
	}
	loadDone := time.Now()

	// Wait until every SDK exported what it holds (its batch delay, the default 5 s when
	// unset, plus slack) and nothing new arrived for that long; then until the output holds
	// every forwarded span, bounded by idle_timeout (10 s) past the last arrival.
	quiet := 5*time.Second + 2*time.Second
	if sc.Delay > 0 && sc.Restart == "" {
		quiet = time.Duration(sc.Delay)*time.Millisecond + 2*time.Second
	}
	for deadline := loadDone.Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		_, _, last := proxy.snapshot()
		if time.Since(last) > quiet && time.Since(loadDone) > quiet {
			break
		}
	}
	gt, faults, last := proxy.snapshot()
	expected := expectedOutput(gt, faults)
	deadline := last.Add(10*time.Second + 5*time.Second)
	for time.Now().Before(deadline) && !outputHolds(col.Output().Lines(), expected) {
		time.Sleep(25 * time.Millisecond)
	}
	close(stopPoll)
	if err := <-pollDone; err != nil {
		t.Fatalf("reading output: %v", err)
	}
	// The processor's own metrics at the end (summed over labels; histograms left out).
	counters := map[string]float64{}
	if m, err := col.ScrapeMetrics(); err != nil {
		t.Logf("scraping the collector's metrics: %v", err)
	} else {
		for _, smp := range m.Samples {
			if strings.HasPrefix(smp.Name, names.MetricPrefix) && !strings.HasSuffix(smp.Name, "_bucket") && !strings.HasSuffix(smp.Name, "_sum") && !strings.HasSuffix(smp.Name, "_count") {
				counters[strings.TrimPrefix(smp.Name, names.MetricPrefix)] += smp.Value
			}
		}
	}
	lines := col.StopAndRead()
	r := evaluate(sc, reqs, gt, faults, lines)
	r.ProcessorMetrics = counters
	return r
}

// sendLoad sends n requests (ids from..from+n-1) to the frontend, realappsConcurrency at a
// time, and returns them with the trace ID each made (the frontend's X-Trace-Id header).
func sendLoad(client *http.Client, frontend string, from, n int) []request {
	out := make([]request, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < realappsConcurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				id := from + i
				r := request{ID: id, Query: realappsQuery(id)}
				resp, err := client.Get(frontend + "/order?" + r.Query)
				if err != nil {
					r.Err = err.Error()
				} else {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					r.Status = resp.StatusCode
					if tid, err := parseTraceID(resp.Header.Get("X-Trace-Id")); err == nil {
						r.TraceID = tid
					} else {
						r.Err = "no trace ID in the answer: " + err.Error()
					}
				}
				out[i] = r
			}
		}()
	}
	wg.Wait()
	return out
}

func parseTraceID(h string) (pcommon.TraceID, error) {
	var id pcommon.TraceID
	if len(h) != 32 {
		return id, fmt.Errorf("X-Trace-Id %q is not 32 hex digits", h)
	}
	for i := 0; i < 16; i++ {
		var b byte
		if _, err := fmt.Sscanf(h[2*i:2*i+2], "%02x", &b); err != nil {
			return id, fmt.Errorf("X-Trace-Id %q: %v", h, err)
		}
		id[i] = b
	}
	return id, nil
}

// writeRealappsSummary writes the reports to <build>/report/summary.json and logs the table.
func writeRealappsSummary(t *testing.T, buildDir string, reports []*scenarioReport) {
	if len(reports) == 0 {
		return
	}
	dir := filepath.Join(buildDir, "report")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("report dir: %v", err)
		return
	}
	b, _ := json.MarshalIndent(reports, "", "  ")
	path := filepath.Join(dir, "summary.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Errorf("write %s: %v", path, err)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-34s %6s %6s %6s %5s %5s %8s %8s %8s %8s %8s\n", "scenario", "traces", "whole", "split", "early", "late", "p50", "p99", "max", "healthy", "other")
	fmt.Fprintf(&sb, "%-34s %6s %6s %6s %5s %5s %8s %8s %8s %8s %8s\n", "", "", "", "", "", "spans", "latency", "", "", "findings", "findings")
	for _, r := range reports {
		fmt.Fprintf(&sb, "%-34s %6d %6d %6d %5d %5d %8s %8s %8s %8d %8d\n", r.Scenario, r.TracesSent, r.Whole, r.Split, r.ReleasedEarly, r.LateSpans,
			r.LatencyP50, r.LatencyP99, r.LatencyMax, r.unexpectedFindings(), r.otherFindings())
	}
	fmt.Fprintf(&sb, "(healthy findings: on traces without an injected anomaly; other findings: of another kind than the injected one, on affected traces)\n")
	fmt.Fprintf(&sb, "\nfindings on healthy traffic (kind / telemetry.sdk.language: count)\n")
	agg := map[string]int{}
	for _, r := range reports {
		for k, v := range r.HealthyFindings {
			agg[k] += v
		}
	}
	keys := make([]string, 0, len(agg))
	for k := range agg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&sb, "  %-48s %d\n", k, agg[k])
	}
	if len(keys) == 0 {
		fmt.Fprintf(&sb, "  none\n")
	}
	fmt.Fprintf(&sb, "\nanomalies (affected traces: detected / right spans / wrong spans)\n")
	for _, r := range reports {
		for _, a := range r.Anomalies {
			fmt.Fprintf(&sb, "  %-28s %-22s %-22s traces %4d detected %4d  required spans %4d/%-4d  wrong spans %d",
				r.Scenario, a.Fault, a.Kind, a.Traces, a.TracesDetected, a.RequiredFound, a.Required, a.Wrong)
			if a.NoEvidence > 0 {
				fmt.Fprintf(&sb, "  (and %d without evidence in their times)", a.NoEvidence)
			}
			sb.WriteString("\n")
		}
	}
	t.Logf("realapps summary (%s):%s", path, sb.String())
}
