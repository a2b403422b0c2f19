package e2e

// End to end: examples/observability (rules.yaml, dashboard.json) against the
// built collector and a real Prometheus server.
//
// Two collectors on loopback, each scraped every second by a Prometheus started by the test
// (its own port and storage in a temp dir; it never uses a system Prometheus):
//
//   - job "otelcol": the alert workload. The trace generator sends healthy traces of six
//     services, plus broken ones (missing_parent: orphans; skewed_child: clock_skew) whose
//     defect lies only on spans of service "checkout", plus at most two findings on spans
//     of "cart" (well below the thresholds). Its exporter is the file exporter (healthy).
//     It keeps a write-ahead log (wal.directory in a temp dir, wal.sync batch), so that the
//     log's gauges, fsync counter and fsync-latency histogram exist.
//   - job "troubled": a collector given every broken kind, tight limits (span_limit,
//     memory_pressure, late spans), keep_latest for conflicts, and a downstream OTLP server
//     in the test that refuses calls in turn retryably, permanently, and accepts (slowly).
//     It exists so that the counters the processor exports only from their first event
//     (duplicates, conflicts, unassembled, late, lost, retries, throttling, HLC refusals)
//     exist, and every dashboard panel can be checked for data.
//
// Prometheus loads a RENDERED COPY of examples/observability/rules.yaml, made by
// renderTestRules: every `for:` becomes 5s and every range/offset in minutes ([10m],
// offset 15m, ...) becomes 1m, so that alerts fire within seconds. Thresholds, expressions,
// labels and annotations are unchanged.
//
// The test then requires, from Prometheus's HTTP API:
//   - every rule of the rendered rules evaluates without error;
//   - TraceConsistencyMissingParents, TraceConsistencyClockSkew and
//     TraceConsistencyServiceFindingsHigh firing for {job="otelcol", service_name="checkout"},
//     and no alert at all (pending or firing) for any other service of job "otelcol", nor any
//     downstream or loss alert for that job;
//   - TraceConsistencySpansLost (cause downstream_permanent) firing for job "troubled";
//   - every expression of every dashboard panel, with the dashboard variables replaced by
//     concrete values (job=~"otelcol|troubled", instance=~".*", service_name=~"checkout",
//     $__rate_interval=1m, $__range=5m), returns a non-empty result, except an expression on
//     a counter in absentCounters (counters no client can provoke, and the hand-off ones)
//     while that counter has no series at all, or with a label value in absentLabelValues
//     while no series has it; and every dashboard variable query has values. A copy of a
//     working expression with a misspelt metric name must come back empty (the check has
//     teeth).
//
// Needs `prometheus` on PATH (Debian package prometheus; `make test-observability`
// installs it). Without it the test skips, or fails when E2E_REQUIRED=1.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

const (
	obsJob         = "otelcol"  // the alert workload's collector
	obsTroubledJob = "troubled" // the collector that makes every counter appear
	obsService     = "checkout" // the one service whose spans carry the defects
	obsMinorSvc    = "cart"     // a service with a few findings, below every threshold
	obsSendFor     = 25 * time.Second
)

// absentCounters are counters the processor exports only from their first event and that
// no client of a collector can provoke (or, for hand-offs, not in the processor form this
// test runs); a dashboard expression on one of them may come back empty as long as
// Prometheus has no series of that name.
var absentCounters = map[string]string{
	names.MetricPrefix + "batches_refused":       "the OTLP receiver passes only well-formed, non-empty batches to the processor",
	names.MetricPrefix + "hlc_backward_jumps":    "needs the collector host's clock to step back",
	names.MetricPrefix + "hlc_logical_overflows": "needs more HLC events within one clock tick than the logical counter holds",
	names.MetricPrefix + "hlc_persist_errors":    "needs writes of hlc.state_file (restart_strategy persist) to fail",
	names.MetricPrefix + "wal_full_refusals":     "needs the write-ahead log at wal.max_bytes (8 MiB at least) of undelivered data",
	names.MetricPrefix + "wal_write_errors":      "needs writes or fsyncs of the write-ahead log to fail (disk full, I/O error)",
	names.MetricPrefix + "wal_records_replayed":  "counted only at a start that finds records in the write-ahead log (a restart)",
	names.MetricPrefix + "wal_spans_replayed":    "counted only at a start that replays undelivered spans (a restart)",
	names.MetricPrefix + "wal_traces_recovered":  "counted only at a start that replays undelivered spans (a restart)",
	names.MetricPrefix + "wal_redelivered_spans": "counted only at a start after a crash while spans were being passed on",
	names.MetricPrefix + "wal_corrupt_records":   "counted only at a start that finds a damaged write-ahead log",
	names.MetricPrefix + "wal_torn_records":      "counted only at a start after a crash during a write-ahead log write",
	// The processor form (this test's collectors) has no hand-off output.
	names.MetricPrefix + "handoff_traces":            "needs the connector form with handoff.on_shutdown or handoff.on_idle",
	names.MetricPrefix + "handoff_spans":             "needs the connector form with handoff.on_shutdown or handoff.on_idle",
	names.MetricPrefix + "handoff_spans_received":    "needs spans handed off by a collector in the connector form",
	names.MetricPrefix + "handoff_spans_merged":      "needs spans handed off by a collector in the connector form",
	names.MetricPrefix + "handoff_traces_incomplete": "needs spans handed off by a collector in the connector form",
	names.MetricPrefix + "handoff_spans_untrusted":   "needs spans carrying a hand-off marker without a valid proof; this test's clients write none",
	// This test's collectors have no sampling section (TestSamplingExample covers it).
	names.MetricPrefix + "sampling_traces": "needs a sampling section",
	names.MetricPrefix + "sampling_spans":  "needs a sampling section",
}

// absentLabelValues are label matchers no client can provoke either: a dashboard
// expression with one of them may come back empty as long as no series of its metrics has
// that label value.
var absentLabelValues = map[string]string{
	`reason="wal_full"`: "needs the write-ahead log past three quarters of wal.max_bytes (8 MiB at least) of undelivered data",
}

// requirePrometheus returns the prometheus binary on PATH, or skips (fails with
// E2E_REQUIRED=1).
func requirePrometheus(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("prometheus")
	if err != nil {
		msg := "prometheus not found on PATH (install Debian's prometheus package; `make test-observability` does it when promtool is missing)"
		if Required() {
			t.Fatalf("%s=1: %s", EnvRequired, msg)
		}
		t.Skip(msg)
	}
	return p
}

func TestObservabilityRulesAndDashboardAgainstPrometheus(t *testing.T) {
	requireProcessor(t)
	bin := RequireBinary(t)
	RequireComponents(t, bin, "exporters/otlp_grpc")
	promBin := requirePrometheus(t)

	// Registered before the collectors, so stopped after them (cleanups run in reverse).
	down := startFlakyDownstream(t)

	alertCol := StartCollectorWith(t, ConfigOptions{
		ProcessorsYAML: TraceConsistencyYAML(NoRestartWait, "quiet_period: 100ms", "release_tick: 50ms", "idle_timeout: 1s",
			fmt.Sprintf("wal: {directory: %s, sync: batch}", filepath.Join(t.TempDir(), "wal"))),
	})
	troubled := StartCollectorWith(t, ConfigOptions{
		ProcessorsYAML: TraceConsistencyYAML(NoRestartWait, "quiet_period: 100ms", "release_tick: 50ms", "idle_timeout: 1s",
			"max_spans_per_trace: 20", "max_buffered_bytes: 524288", "max_release_batch_spans: 50", "shutdown_timeout: 2s",
			"duplicates: {conflict_policy: keep_latest}"),
		ExtraExportersYAML: fmt.Sprintf(`otlp_grpc/down:
  endpoint: %s
  tls:
    insecure: true
  timeout: 5s
  sending_queue:
    enabled: false
  retry_on_failure:
    enabled: false
`, down.addr),
		Exporters: []string{"otlp_grpc/down"},
	})
	// Runs before the collectors are stopped: the troubled one then drains what it holds
	// within its shutdown_timeout and exits cleanly.
	t.Cleanup(func() { down.healthy.Store(true) })

	prom := startPrometheus(t, promBin, map[string]string{
		obsJob:         strings.TrimPrefix(strings.TrimSuffix(alertCol.MetricsURL, "/metrics"), "http://"),
		obsTroubledJob: strings.TrimPrefix(strings.TrimSuffix(troubled.MetricsURL, "/metrics"), "http://"),
	})

	ctx, cancel := context.WithTimeout(context.Background(), obsSendFor)
	defer cancel()
	var wg sync.WaitGroup
	var mainSent mainWorkload
	wg.Add(2)
	go func() { defer wg.Done(); mainSent = sendAlertWorkload(ctx, t, alertCol) }()
	go func() { defer wg.Done(); sendTroubledWorkload(ctx, t, troubled) }()

	// The alerts: wanted ones firing, none for other services of the alert job.
	want := []alertKey{
		{"TraceConsistencyMissingParents", obsJob, obsService, ""},
		{"TraceConsistencyClockSkew", obsJob, obsService, ""},
		{"TraceConsistencyServiceFindingsHigh", obsJob, obsService, ""},
		{"TraceConsistencySpansLost", obsTroubledJob, "", "downstream_permanent"},
	}
	deadline := time.Now().Add(obsSendFor + 30*time.Second)
	var alerts []promAlert
	for {
		alerts = prom.alerts(t)
		checkNoStrayAlerts(t, alerts)
		if missing := missingFiring(alerts, want); len(missing) == 0 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("alerts not firing after %v: %v\nalerts: %s\nfindings in Prometheus: %s",
				obsSendFor+30*time.Second, missing, describeAlerts(alerts), prom.describe(t, "sum by (job, service_name, kind) ("+names.MetricFindings+")"))
		}
		time.Sleep(time.Second)
	}
	t.Logf("firing as expected: %v", want)

	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("alert workload: %d traces sent (%d broken on %s spans, %d on %s spans)",
		mainSent.traces, mainSent.brokenMain, obsService, mainSent.brokenMinor, obsMinorSvc)

	// A little after the workload: still nothing for the other services.
	time.Sleep(3 * time.Second)
	checkNoStrayAlerts(t, prom.alerts(t))
	prom.checkRulesHealthy(t)

	checkDashboard(t, prom)
	t.Logf("alerts at the end: %s", describeAlerts(prom.alerts(t)))
}

// --------------------------------------------------------------------------- workloads

type mainWorkload struct{ traces, brokenMain, brokenMinor int }

// defectServices returns the services of the spans that carry the defect of a broken plan:
// the orphans (children of the withheld span) for missing_parent, the shifted SERVER span
// for skewed_child; with the number of findings it makes.
func defectServices(g *tracegen.Generator, tr *tracegen.Trace) (svcs []string, findings int) {
	svcName := func(s *tracegen.Span) string { return g.Services()[s.Service].Name }
	switch tr.Broken {
	case tracegen.MissingParent:
		for _, s := range tr.Spans {
			if !s.Send {
				for _, c := range s.Children {
					if !slices.Contains(svcs, svcName(c)) {
						svcs = append(svcs, svcName(c))
					}
					findings++
				}
			}
		}
	case tracegen.SkewedChild:
		for _, s := range tr.Spans {
			if s.Key() == tr.Truth.Affected {
				svcs, findings = []string{svcName(s)}, 1
			}
		}
	}
	return svcs, findings
}

// sendAlertWorkload sends about 40 traces/s until ctx ends: every healthy trace, broken
// ones only when their defect is on obsService spans, and at most two findings on
// obsMinorSvc spans.
func sendAlertWorkload(ctx context.Context, t *testing.T, c *Collector) mainWorkload {
	g := tracegen.MustNew(tracegen.Config{
		Seed: 17, Traces: 1 << 20, Services: 6, MinSpans: 4, MaxSpans: 12,
		Broken: []tracegen.BrokenKind{tracegen.MissingParent, tracegen.SkewedChild}, BrokenEvery: 2,
		LiveClock: true,
	})
	cl, err := tracegen.Dial(c.OTLPEndpoint)
	if err != nil {
		t.Errorf("dial: %v", err)
		return mainWorkload{}
	}
	defer cl.Close()
	var w mainWorkload
	minorFindings := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; {
		select {
		case <-ctx.Done():
			return w
		case <-tick.C:
		}
		for sent := 0; sent < 4; i++ {
			tr := g.Plan(i)
			if tr.Broken != "" {
				svcs, n := defectServices(g, tr)
				switch {
				case len(svcs) == 1 && svcs[0] == obsService:
					w.brokenMain++
				case len(svcs) == 1 && svcs[0] == obsMinorSvc && minorFindings+n <= 2:
					minorFindings += n
					w.brokenMinor++
				default:
					continue
				}
			}
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := cl.SendTrace(rctx, g, tr)
			cancel()
			if err != nil {
				t.Errorf("sending trace %d to the alert collector: %v", i, err)
				return w
			}
			w.traces++
			sent++
		}
	}
}

// sendTroubledWorkload sends every broken kind, in batches, from three concurrent senders
// until ctx ends; refusals (throttling) are expected and ignored. Concurrent senders, because
// a batch whose call passes released data on waits for the slow downstream, while the
// others' batches are ingested and pile up.
func sendTroubledWorkload(ctx context.Context, t *testing.T, c *Collector) {
	g := tracegen.MustNew(tracegen.Config{
		Seed: 23, Traces: 1 << 20, Services: 6, MinSpans: 5, MaxSpans: 40,
		Broken: tracegen.AllBrokenKinds(), BrokenEvery: 2, SpansPerBatch: 50, Interleave: 4,
		LiveClock: true,
	})
	const senders = 3
	var wg sync.WaitGroup
	for w := 0; w < senders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sendBatches(ctx, t, c, g.Batches(w, senders))
		}()
	}
	wg.Wait()
}

func sendBatches(ctx context.Context, t *testing.T, c *Collector, b *tracegen.Batches) {
	cl, err := tracegen.Dial(c.OTLPEndpoint)
	if err != nil {
		t.Errorf("dial: %v", err)
		return
	}
	defer cl.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		td, ok := b.Next()
		if !ok {
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_ = cl.Export(rctx, td)
		cancel()
	}
}

// --------------------------------------------------------------------------- downstream

type flakyDownstream struct {
	ptraceotlp.UnimplementedGRPCServer
	addr    string
	calls   atomic.Int64
	healthy atomic.Bool // accept every call at once (set before the collectors stop)
}

// Export refuses in turn with a retryable error (UNAVAILABLE), a permanent one
// (INVALID_ARGUMENT), and accepts after 1.5s (a slow backend: released data piles up, and
// incoming batches get throttled).
func (f *flakyDownstream) Export(ctx context.Context, _ ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	if f.healthy.Load() {
		return ptraceotlp.NewExportResponse(), nil
	}
	switch f.calls.Add(1) % 3 {
	case 1:
		return ptraceotlp.NewExportResponse(), status.Error(codes.Unavailable, "test backend: down for now")
	case 2:
		return ptraceotlp.NewExportResponse(), status.Error(codes.InvalidArgument, "test backend: rejected")
	}
	select {
	case <-time.After(1500 * time.Millisecond):
	case <-ctx.Done():
	}
	return ptraceotlp.NewExportResponse(), nil
}

func startFlakyDownstream(t *testing.T) *flakyDownstream {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	f := &flakyDownstream{addr: l.Addr().String()}
	s := grpc.NewServer()
	ptraceotlp.RegisterGRPCServer(s, f)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return f
}

// --------------------------------------------------------------------------- Prometheus

// renderTestRules returns rules.yaml with every `for:` set to 5s and every range or
// offset in minutes set to 1m (see the file comment).
func renderTestRules(rules string) string {
	rules = regexp.MustCompile(`(?m)^(\s*)for: \S+$`).ReplaceAllString(rules, "${1}for: 5s")
	rules = regexp.MustCompile(`\[\d+m\]`).ReplaceAllString(rules, "[1m]")
	return regexp.MustCompile(`offset \d+m\b`).ReplaceAllString(rules, "offset 1m")
}

type prometheus struct {
	base string // http://127.0.0.1:port
}

// startPrometheus runs prometheus on a free loopback port with its own storage in a temp
// dir, scraping each target (job -> host:port) every second, with the rendered rules, and
// waits until it is ready. Stopped (SIGTERM, then SIGKILL) at cleanup; its log is printed
// if the test failed.
func startPrometheus(t *testing.T, promBin string, targets map[string]string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join(RepoRoot(), "examples", "observability", "rules.yaml"))
	if err != nil {
		t.Fatalf("read rules: %v", err)
	}
	rendered := renderTestRules(string(src))
	if strings.Contains(rendered, "for: 10m") || !strings.Contains(rendered, "for: 5s") {
		t.Fatalf("renderTestRules did not shorten the durations of rules.yaml")
	}
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(rendered), 0o644); err != nil {
		t.Fatal(err)
	}
	var cfg strings.Builder
	cfg.WriteString("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nrule_files:\n  - rules.yaml\nscrape_configs:\n")
	jobs := make([]string, 0, len(targets))
	for j := range targets {
		jobs = append(jobs, j)
	}
	sort.Strings(jobs)
	for _, j := range jobs {
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", j, targets[j])
	}
	cfgPath := filepath.Join(dir, "prometheus.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := FreeAddr(t)
	logPath := filepath.Join(dir, "prometheus.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promBin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
	)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("start %s: %v", promBin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		lf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 10000 {
				b = b[len(b)-10000:]
			}
			t.Logf("prometheus log (%s):\n%s\nprometheus config:\n%s", logPath, b, cfg.String())
		}
	})
	p := &prometheus{base: "http://" + addr}
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(p.base + "/-/ready")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-done:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("prometheus exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready on %s after 30s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p
}

// get calls the HTTP API and decodes its data field into out.
func (p *prometheus) get(path string, params url.Values, out any) error {
	client := &http.Client{Timeout: 10 * time.Second}
	u := p.base + path
	if params != nil {
		u += "?" + params.Encode()
	}
	resp, err := client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("GET %s: status %d, %v: %.300s", path, resp.StatusCode, err, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("GET %s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, out)
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query; it returns the samples of a vector (or one for a scalar).
func (p *prometheus) query(expr string) ([]promSample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.get("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var v []promSample
		err := json.Unmarshal(data.Result, &v)
		return v, err
	case "scalar":
		var s [2]any
		err := json.Unmarshal(data.Result, &s)
		return []promSample{{Value: s}}, err
	}
	return nil, fmt.Errorf("query %s: result type %s", expr, data.ResultType)
}

// describe returns the samples of expr as text, for failure messages.
func (p *prometheus) describe(t *testing.T, expr string) string {
	v, err := p.query(expr)
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, s := range v {
		fmt.Fprintf(&b, "\n  %v %v", s.Metric, s.Value[1])
	}
	return b.String()
}

// series returns the label sets of the series matching selector.
func (p *prometheus) series(selector string) ([]map[string]string, error) {
	var out []map[string]string
	err := p.get("/api/v1/series", url.Values{"match[]": {selector}}, &out)
	return out, err
}

type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
	Value  string            `json:"value"`
}

func (p *prometheus) alerts(t *testing.T) []promAlert {
	t.Helper()
	var data struct {
		Alerts []promAlert `json:"alerts"`
	}
	if err := p.get("/api/v1/alerts", nil, &data); err != nil {
		t.Fatalf("alerts: %v", err)
	}
	return data.Alerts
}

// checkRulesHealthy fails for every rule whose last evaluation failed.
func (p *prometheus) checkRulesHealthy(t *testing.T) {
	t.Helper()
	var data struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.get("/api/v1/rules", nil, &data); err != nil {
		t.Fatalf("rules: %v", err)
	}
	n := 0
	for _, g := range data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				t.Errorf("rule %s (group %s): health %q: %s", r.Name, g.Name, r.Health, r.LastError)
			}
		}
	}
	if len(data.Groups) != 3 || n < 20 {
		t.Errorf("prometheus loaded %d rule groups with %d rules from rules.yaml, want the 3 groups", len(data.Groups), n)
	}
}

type alertKey struct{ name, job, service, cause string }

func (k alertKey) String() string {
	s := k.name + "{job=" + k.job
	if k.service != "" {
		s += ",service_name=" + k.service
	}
	if k.cause != "" {
		s += ",cause=" + k.cause
	}
	return s + "}"
}

func missingFiring(alerts []promAlert, want []alertKey) []alertKey {
	var missing []alertKey
	for _, w := range want {
		found := false
		for _, a := range alerts {
			if a.State == "firing" && a.Labels["alertname"] == w.name && a.Labels["job"] == w.job &&
				(w.service == "" || a.Labels["service_name"] == w.service) &&
				(w.cause == "" || a.Labels["cause"] == w.cause) {
				found = true
			}
		}
		if !found {
			missing = append(missing, w)
		}
	}
	return missing
}

// checkNoStrayAlerts fails for any alert (pending or firing) of the alert job other than
// the per-service ones of obsService: the other services are healthy (or below the
// thresholds), and so is its downstream.
func checkNoStrayAlerts(t *testing.T, alerts []promAlert) {
	t.Helper()
	for _, a := range alerts {
		if a.Labels["job"] != obsJob {
			continue
		}
		if a.Labels["service_name"] == obsService {
			continue
		}
		t.Errorf("unexpected %s alert %s for job %s (service %q): %v (value %s)",
			a.State, a.Labels["alertname"], obsJob, a.Labels["service_name"], a.Labels, a.Value)
	}
}

func describeAlerts(alerts []promAlert) string {
	var out []string
	for _, a := range alerts {
		out = append(out, fmt.Sprintf("%s %s{job=%s,instance=%s,service_name=%s,cause=%s}=%s",
			a.State, a.Labels["alertname"], a.Labels["job"], a.Labels["instance"], a.Labels["service_name"], a.Labels["cause"], a.Value))
	}
	sort.Strings(out)
	return "\n  " + strings.Join(out, "\n  ")
}

// --------------------------------------------------------------------------- dashboard

// dashboardVars are the concrete values the dashboard's variables take in the test:
// what Grafana substitutes with both jobs selected, all collectors and one service.
var dashboardVars = map[string]string{
	"job":             obsJob + "|" + obsTroubledJob,
	"instance":        ".*",
	"service_name":    obsService,
	"__rate_interval": "1m",
	"__interval":      "15s",
	"__range":         "5m",
}

var varRe = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)

// substituteVars replaces the dashboard variables in expr; unknown variables are an error.
func substituteVars(expr string) (string, error) {
	var unknown []string
	out := varRe.ReplaceAllStringFunc(expr, func(m string) string {
		sm := varRe.FindStringSubmatch(m)
		name := sm[1] + sm[2]
		v, ok := dashboardVars[name]
		if !ok {
			unknown = append(unknown, m)
			return m
		}
		return v
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown dashboard variables %v", unknown)
	}
	return out, nil
}

type dashPanel struct {
	ID      int         `json:"id"`
	Title   string      `json:"title"`
	Type    string      `json:"type"`
	Panels  []dashPanel `json:"panels"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

type dashboard struct {
	Panels     []dashPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type dashExpr struct {
	where, expr string
}

func loadDashboard(t *testing.T) (dashboard, []dashExpr) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(), "examples", "observability", "dashboard.json"))
	if err != nil {
		t.Fatalf("read dashboard: %v", err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard.json: %v", err)
	}
	var exprs []dashExpr
	var walk func([]dashPanel)
	walk = func(ps []dashPanel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				exprs = append(exprs, dashExpr{fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID), tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	if len(exprs) < 20 {
		t.Fatalf("dashboard.json: only %d panel expressions found", len(exprs))
	}
	return d, exprs
}

var metricNameRe = regexp.MustCompile(`\botelcol_[a-z0-9_]+`)

// checkDashboard requires data for every panel expression and every variable query (see
// the file comment); it retries for a while, since some counters appear late.
func checkDashboard(t *testing.T, prom *prometheus) {
	t.Helper()
	d, exprs := loadDashboard(t)
	deadline := time.Now().Add(20 * time.Second)
	var problems, allowed []string
	var good string
	for {
		problems, allowed, good = nil, nil, ""
		for _, e := range exprs {
			q, err := substituteVars(e.expr)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v: %s", e.where, err, e.expr))
				continue
			}
			v, err := prom.query(q)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: query failed: %v\n      %s", e.where, err, q))
				continue
			}
			if len(v) > 0 {
				if good == "" && metricNameRe.MatchString(q) {
					good = q
				}
				continue
			}
			if why := absentOnly(prom, q); why != "" {
				allowed = append(allowed, e.where+": "+why)
				continue
			}
			problems = append(problems, fmt.Sprintf("%s: no data\n      %s", e.where, q))
		}
		for _, v := range d.Templating.List {
			if v.Type != "query" {
				continue
			}
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				var s string
				if json.Unmarshal(v.Query, &s) != nil {
					problems = append(problems, fmt.Sprintf("variable %s: cannot read its query", v.Name))
					continue
				}
				q.Query = s
			}
			if p := checkVariable(prom, v.Name, q.Query); p != "" {
				problems = append(problems, p)
			}
		}
		if len(problems) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if len(problems) > 0 {
		t.Errorf("%d dashboard expressions or variables return no data from the collectors' metrics "+
			"(a metric or label the collector does not export?):\n  %s", len(problems), strings.Join(problems, "\n  "))
		return
	}
	t.Logf("dashboard: %d panel expressions and every variable return data; %d without data, allowed:\n  %s",
		len(exprs)-len(allowed), len(allowed), strings.Join(allowed, "\n  "))

	// The check has teeth: the same expression with a misspelt metric name returns nothing.
	if good == "" {
		t.Fatalf("no dashboard expression with a collector metric returned data")
	}
	m := metricNameRe.FindString(good)
	bad := strings.Replace(good, m, m+"_total", 1)
	if v, err := prom.query(bad); err != nil || len(v) > 0 {
		t.Errorf("a dashboard expression naming a metric we do not export (%s_total) still returned data (%v, err %v): %s", m, v, err, bad)
	}
}

// absentOnly explains why an empty expression is acceptable: it names a counter of
// absentCounters that has no series at all (and that the collector declares), or it has a
// matcher of absentLabelValues that no series of its metrics matches. It returns "" when
// the expression should have had data.
func absentOnly(prom *prometheus, q string) string {
	var why []string
	for matcher, reason := range absentLabelValues {
		if !strings.Contains(q, matcher) {
			continue
		}
		for _, m := range metricNameRe.FindAllString(q, -1) {
			s, err := prom.series(m + "{" + matcher + "}")
			if err != nil || len(s) > 0 || !declaredMetric(m) {
				return ""
			}
		}
		why = append(why, matcher+": "+reason)
	}
	for _, m := range metricNameRe.FindAllString(q, -1) {
		reason, ok := absentCounters[m]
		if !ok {
			continue
		}
		s, err := prom.series(m)
		if err != nil || len(s) > 0 {
			return ""
		}
		if !declaredMetric(m) {
			return ""
		}
		why = append(why, m+": "+reason)
	}
	return strings.Join(why, "; ")
}

var (
	declaredOnce sync.Once
	declared     map[string]bool
)

// declaredMetric reports whether traceconsistencyprocessor/metadata.yaml declares the metric (exported as
// otelcol_<key>).
func declaredMetric(name string) bool {
	declaredOnce.Do(func() {
		declared = map[string]bool{}
		b, err := os.ReadFile(filepath.Join(RepoRoot(), "traceconsistencyprocessor", "metadata.yaml"))
		if err != nil {
			return
		}
		for _, m := range regexp.MustCompile(`(?m)^    (processor_traceconsistency_\w+):\s*$`).FindAllStringSubmatch(string(b), -1) {
			declared["otelcol_"+m[1]] = true
		}
	})
	return declared[name]
}

var labelValuesRe = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*,\s*(\w+)\s*\)\s*$`)

// checkVariable evaluates a label_values(selector, label) variable query; it must list
// values, including the one the test substitutes for the variable.
func checkVariable(prom *prometheus, name, query string) string {
	m := labelValuesRe.FindStringSubmatch(query)
	if m == nil {
		return fmt.Sprintf("variable %s: query is not label_values(<selector>, <label>): %s", name, query)
	}
	sel, err := substituteVars(m[1])
	if err != nil {
		return fmt.Sprintf("variable %s: %v", name, err)
	}
	series, err := prom.series(sel)
	if err != nil {
		return fmt.Sprintf("variable %s: %v", name, err)
	}
	var values []string
	for _, s := range series {
		if v := s[m[2]]; v != "" && !slices.Contains(values, v) {
			values = append(values, v)
		}
	}
	if len(values) == 0 {
		return fmt.Sprintf("variable %s: %s has no values (selector %s)", name, query, sel)
	}
	if want := dashboardVars[name]; want != "" && want != ".*" {
		for _, w := range strings.Split(want, "|") {
			if !slices.Contains(values, w) {
				return fmt.Sprintf("variable %s: %q not among its values %v", name, w, values)
			}
		}
	}
	return ""
}
