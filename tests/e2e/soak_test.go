package e2e

// The soak of "acknowledged means delivered": a gateway with traceconsistency and
// its write-ahead log exports through the otlp_grpc exporter with the settings the
// README recommends (sending_queue.wait_for_result, short retry intervals) to a
// real backend collector (otlp receiver -> file exporter) that is stopped and
// started again and again. Clients send traces whose children and roots travel in
// separate requests and retry every refused request with backoff, as SDKs do. In
// one outage the gateway gets SIGTERM, in another it is killed with SIGKILL while
// its exporter holds queued data; each time it restarts on the same log.
//
// The short schedule (four backend outages) runs in `make test`; `make soak` runs
// it for TC_SOAK_DURATION (e.g. 10m). Everything listens on 127.0.0.1; every wait
// is bounded.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// EnvSoakDuration sets how long TestSoakAcknowledgedMeansDelivered runs (a Go
// duration); unset or shorter than the short schedule: the short schedule.
const EnvSoakDuration = "TC_SOAK_DURATION"

const (
	soakUp       = 8 * time.Second // the backend's time up in each cycle
	soakDown     = 6 * time.Second // and down
	soakClients  = 4
	soakRate     = 80 // traces per second per client (4 spans each)
	soakBuffered = 64 << 20
	// soakSends and soakBatch are max_concurrent_sends and max_release_batch_spans of
	// the gateway: with wait_for_result, the exporter's queue holds at most soakSends
	// releases of about soakBatch spans.
	soakSends = 10
	soakBatch = 1024
	// soakBytesPerQueuedSpan is what README's "Sizing memory" allows per span that the
	// exporter holds (decoded, and encoded once more for the gRPC call).
	soakBytesPerQueuedSpan = 2 << 10
)

// soakExporterYAML is the gateway's exporter: the safe settings of the README's
// gateway topology.
func soakExporterYAML(endpoint string) string {
	return fmt.Sprintf(`otlp_grpc/backend:
  endpoint: %s
  tls:
    insecure: true
  timeout: 5s
  sending_queue:
    enabled: true
    wait_for_result: true
    sizer: requests
    queue_size: %d
    num_consumers: %d
  retry_on_failure:
    enabled: true
    initial_interval: 100ms
    max_interval: 1s
    max_elapsed_time: 10s
`, endpoint, 2*soakSends, soakSends)
}

// soakRun sends traces at about rate per second until ctx ends: a new trace's
// children, then, once five are pending, the oldest pending root. A refused request
// is retried with backoff (50 ms doubling to 1 s) until accepted or ctx ends; every
// retry marks its spans as sent twice by the client.
func soakRun(ctx context.Context, c *crashClient, cl *tracegen.Client, rate int) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for ctx.Err() == nil {
		c.seq++
		t := newCrashTrace(c.rng, c.base+c.seq)
		if soakSend(ctx, c, cl, t.children, t.keys[:len(t.keys)-1]) {
			c.traces[t.id] = t
			c.pending = append(c.pending, t)
		}
		for len(c.pending) > 5 && ctx.Err() == nil {
			p := c.pending[0]
			if !soakSend(ctx, c, cl, p.root, p.keys[len(p.keys)-1:]) {
				break
			}
			c.rootAcked[p.id] = true
			c.pending = c.pending[1:]
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// soakSend exports td (holding the spans keys), retrying refusals with backoff until
// it is accepted (true) or ctx ends (false).
func soakSend(ctx context.Context, c *crashClient, cl *tracegen.Client, td ptrace.Traces, keys []tracegen.SpanKey) bool {
	backoff := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if ctx.Err() != nil {
			return false
		}
		if attempt > 0 {
			for _, k := range keys {
				c.resent[k] = true
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cl.Export(rctx, td)
		cancel()
		if err == nil {
			for _, k := range keys {
				c.acked[k]++
			}
			return true
		}
		c.errors++
		select {
		case <-ctx.Done():
			return false
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// soakGateway is one life of the gateway.
type soakGateway struct {
	c       *Collector
	peakRSS atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	lost    atomic.Int64 // spans_lost at the last scrape
}

// pollRSS records the gateway's peak RSS and its spans_lost until stopped.
func (g *soakGateway) poll() {
	defer close(g.done)
	pid := g.c.cmd.Process.Pid
	tk := time.NewTicker(20 * time.Millisecond)
	defer tk.Stop()
	n := 0
	for {
		if v, err := procStatusKB(pid, "VmRSS"); err == nil && v > g.peakRSS.Load() {
			g.peakRSS.Store(v)
		}
		if n++; n%25 == 0 {
			if m, err := g.c.ScrapeMetrics(); err == nil {
				g.lost.Store(int64(m.Sum(metricSpansLost)))
			}
		}
		select {
		case <-g.stop:
			if v, err := procStatusKB(pid, "VmHWM"); err == nil && v > g.peakRSS.Load() {
				g.peakRSS.Store(v)
			}
			return
		case <-tk.C:
		}
	}
}

var logSpansField = regexp.MustCompile(`"spans": (\d+)`)

// loggedLost sums the spans of the log lines in which the processor reports
// acknowledged spans as lost.
func loggedLost(log string) int {
	n := 0
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "acknowledged spans are lost") && !strings.Contains(line, "could be delivered; they are lost") {
			continue
		}
		if m := logSpansField.FindStringSubmatch(line); m != nil {
			v, _ := strconv.Atoi(m[1])
			n += v
		}
	}
	return n
}

// TestSoakAcknowledgedMeansDelivered: every span a client got an acknowledgement
// for reaches the backend (duplicates are allowed, counted and reported), every
// trace whose spans were all acknowledged arrives whole in one request, the
// gateway's RSS stays within README's bound (2 × max_buffered_bytes plus what the
// exporter may hold, over the idle collector), spans_lost equals what was really
// lost (nothing), and the SIGTERM during an outage exits cleanly, saying that what
// it could not deliver stays in the log.
//
// With the exporter's default in-memory queue (no wait_for_result), the processor
// marked releases delivered once queued: the SIGTERM's exporter shutdown and the
// kill dropped them, and the first check fails.
func TestSoakAcknowledgedMeansDelivered(t *testing.T) {
	requireProcessor(t)
	bin := RequireBinary(t)
	RequireComponents(t, bin, "exporters/otlp_grpc")
	cycles := 4
	if d, err := time.ParseDuration(os.Getenv(EnvSoakDuration)); err == nil {
		cycles = max(cycles, int(d/(soakUp+soakDown)))
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d backend outages of %v every %v", seed, cycles, soakDown, soakUp+soakDown)

	backendAddr := FreeAddr(t)
	var backends []*Collector
	backendUp := func() { backends = append(backends, startBackend(t, backendAddr)) }
	backendDown := func() {
		if err := backends[len(backends)-1].Stop(); err != nil {
			t.Errorf("stopping the backend: %v", err)
		}
	}

	walDir := filepath.Join(t.TempDir(), "wal")
	addrs := ConfigOptions{OTLPEndpoint: FreeAddr(t), HealthEndpoint: FreeAddr(t), MetricsPort: FreePort(t)}
	var gateways []*soakGateway
	startGateway := func() *soakGateway {
		opts := addrs
		// max_buffered_bytes without wal.max_bytes: the log's default bound fits it.
		opts.ProcessorsYAML = TraceConsistencyYAML("quiet_period: 300ms", "release_tick: 50ms", "idle_timeout: 60s", "max_age: 120s",
			fmt.Sprintf("max_buffered_bytes: %d", soakBuffered), fmt.Sprintf("max_concurrent_sends: %d", soakSends),
			fmt.Sprintf("max_release_batch_spans: %d", soakBatch), "shutdown_timeout: 2s",
			NoRestartWait, fmt.Sprintf("wal: {directory: %s, sync: batch}", walDir))
		opts.ExtraExportersYAML = soakExporterYAML(backendAddr)
		opts.Exporters = []string{"otlp_grpc/backend"}
		dir := t.TempDir()
		cfgPath, opts := WriteConfig(t, dir, opts)
		c := launch(t, bin, dir, cfgPath, nil, opts, true, func() string { b, _ := os.ReadFile(cfgPath); return string(b) })
		g := &soakGateway{c: c, stop: make(chan struct{}), done: make(chan struct{})}
		go g.poll()
		gateways = append(gateways, g)
		return g
	}
	endGateway := func(g *soakGateway) {
		close(g.stop)
		<-g.done
	}

	backendUp()
	gw := startGateway()
	time.Sleep(500 * time.Millisecond)
	baseRSS, err := procStatusKB(gw.c.cmd.Process.Pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}

	clients := make([]*crashClient, soakClients)
	for i := range clients {
		clients[i] = newCrashClient(seed+uint64(i), i<<20)
	}
	var (
		cancelClients context.CancelFunc
		clientsDone   sync.WaitGroup
		conns         []*tracegen.Client
	)
	startClients := func() {
		var ctx context.Context
		ctx, cancelClients = context.WithCancel(context.Background())
		conns = conns[:0]
		for _, c := range clients {
			cl, err := tracegen.Dial(gw.c.OTLPEndpoint)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, cl)
			clientsDone.Add(1)
			go func() { defer clientsDone.Done(); soakRun(ctx, c, cl, soakRate) }()
		}
	}
	stopClients := func() {
		cancelClients()
		clientsDone.Wait()
		for _, cl := range conns {
			cl.Close()
		}
	}

	var redelivered, replayed float64
	restart := func(how string) {
		// A replay of nothing adds nothing, and its counters do not appear: then its log line.
		m := gw.c.WaitForMetrics(20*time.Second, "the replay counted", func(m Metrics) bool {
			return m.Has(metricWALRecords) || strings.Contains(gw.c.Log(), `"records": 0,`)
		})
		redelivered += m.Sum(metricWALRedelivered)
		replayed += m.Sum(metricWALSpansReplayed)
		t.Logf("after the %s: %v spans replayed, %v traces recovered, %v possibly re-delivered", how,
			m.Sum(metricWALSpansReplayed), m.Sum(metricWALTracesRecovered), m.Sum(metricWALRedelivered))
	}

	startClients()
	sigterms, kills, killsQueued := 0, 0, 0
	for cycle := 1; cycle <= cycles; cycle++ {
		time.Sleep(soakUp)
		backendDown()
		outageEnds := time.Now().Add(soakDown)
		switch {
		case cycle%2 == 0:
			// SIGTERM during the outage: shutdown cannot deliver; what is left stays in
			// the log; the collector exits cleanly and says so.
			time.Sleep(time.Second)
			elapsed, exitErr, killed := sigtermAndWait(gw.c, 15*time.Second)
			stopClients()
			endGateway(gw)
			sigterms++
			if killed || exitErr != nil {
				t.Errorf("SIGTERM during an outage: exit error %v, killed %v (after %v); want a clean exit", exitErr, killed, elapsed)
			}
			if log := gw.c.Log(); !strings.Contains(log, "they are not lost") {
				t.Errorf("the SIGTERM's log does not say that what it could not deliver stays in the log")
			}
			gw = startGateway()
			restart("SIGTERM")
			startClients()
		case cycle%2 == 1 && cycle > 1:
			// kill -9 while the exporter holds queued data (the processor's calls wait
			// for the backend).
			queued := 0.0
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				if m, err := gw.c.ScrapeMetrics(); err == nil {
					if queued = m.Sum("otelcol_exporter_queue_size"); queued > 0 {
						break
					}
				}
				time.Sleep(50 * time.Millisecond)
			}
			kill9(gw.c)
			stopClients()
			endGateway(gw)
			kills++
			if queued > 0 {
				killsQueued++
			}
			t.Logf("kill -9 with %v requests in the exporter's queue", queued)
			gw = startGateway()
			restart("kill -9")
			startClients()
		}
		time.Sleep(time.Until(outageEnds))
		backendUp()
	}
	// The end: the backend stays up; clients send their pending roots; the gateway
	// delivers everything and stops.
	stopClients()
	deadline := time.Now().Add(60 * time.Second)
	cl, err := tracegen.Dial(gw.c.OTLPEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		for _, p := range c.pending {
			if !soakSend(context.Background(), c, cl, p.root, p.keys[len(p.keys)-1:]) {
				t.Fatal("a root was refused at the end")
			}
			c.rootAcked[p.id] = true
		}
		c.pending = nil
		if time.Now().After(deadline) {
			t.Fatal("the pending roots were not accepted within 60s")
		}
	}
	cl.Close()
	acked := map[tracegen.SpanKey]bool{}
	for _, c := range clients {
		for k := range c.acked {
			acked[k] = true
		}
	}
	waitSoakDelivered(t, backends, acked, 90*time.Second)
	if elapsed, exitErr, killed := sigtermAndWait(gw.c, 30*time.Second); killed || exitErr != nil {
		t.Errorf("final stop: exit error %v, killed %v (after %v)", exitErr, killed, elapsed)
	}
	endGateway(gw)

	// What arrived, over every life of the backend.
	got := map[tracegen.SpanKey]int{}
	lines := map[tracegen.SpanKey][]int{}
	records := 0
	for i, b := range backends {
		for _, r := range Spans(b.StopAndRead()) {
			records++
			got[r.Key]++
			lines[r.Key] = append(lines[r.Key], i<<32|r.Line)
		}
	}
	el := newErrorLimiter(t)
	defer el.Summary()
	lost, dups, clientResent, whole, refusals := 0, 0, 0, 0, 0
	for _, c := range clients {
		refusals += c.errors
		for k := range c.acked {
			if got[k] == 0 {
				lost++
				el.Errorf("acknowledged span lost", "span %v was acknowledged and never reached the backend", k)
			}
		}
		for id, ok := range c.rootAcked {
			if !ok {
				continue
			}
			tr := c.traces[id]
			if oneLineHoldsAll(tr.keys, lines) {
				whole++
			} else {
				el.Errorf("trace split", "trace %v: no single request holds its %d spans (lines %v)", id, len(tr.keys), linesOf(tr.keys, lines))
			}
		}
	}
	for k, n := range got {
		if n <= 1 {
			continue
		}
		resent := false
		for _, c := range clients {
			resent = resent || c.resent[k]
		}
		if resent {
			clientResent += n - 1
		} else {
			dups += n - 1
		}
	}
	var peak int64
	counted, logged := int64(0), 0
	for _, g := range gateways {
		peak = max(peak, g.peakRSS.Load())
		counted += g.lost.Load()
		logged += loggedLost(g.c.Log())
	}
	bound := baseRSS + 2*soakBuffered + soakSends*soakBatch*soakBytesPerQueuedSpan
	t.Logf("%d backend outages, %d SIGTERM, %d kill -9; %d spans acknowledged, %d records at the backend, %d lost; %d traces whole; "+
		"%d spans arrived more than once from the gateway (%d more sent twice by the clients); gateways replayed %v spans, reported %v possibly re-delivered; "+
		"%d client requests refused and retried; peak RSS %d MiB (idle %d MiB, bound %d MiB); spans_lost %d, logged as lost %d",
		cycles, sigterms, kills, len(acked), records, lost, whole, dups, clientResent, replayed, redelivered,
		refusals, peak>>20, baseRSS>>20, bound>>20, counted, logged)
	if lost > 0 {
		t.Errorf("%d acknowledged spans never reached the backend", lost)
	}
	if int(counted) != lost || logged != lost {
		t.Errorf("spans_lost %d and logged as lost %d, but %d were really lost", counted, logged, lost)
	}
	if peak > bound {
		t.Errorf("peak RSS %d MiB is over the documented bound %d MiB (idle %d MiB + 2 × max_buffered_bytes + max_concurrent_sends × max_release_batch_spans × 2 KiB)",
			peak>>20, bound>>20, baseRSS>>20)
	}
	if kills > 0 && killsQueued == 0 {
		t.Errorf("none of the %d kill -9 caught the exporter holding queued calls", kills)
	}
	if replayed == 0 {
		t.Errorf("no span was replayed after %d SIGTERM and %d kill -9: the restarts did not catch undelivered data", sigterms, kills)
	}
}

// waitSoakDelivered polls the backends' outputs until every acknowledged span has
// arrived at one of them (bounded; then the test reports what is missing).
func waitSoakDelivered(t *testing.T, backends []*Collector, acked map[tracegen.SpanKey]bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		seen := map[tracegen.SpanKey]bool{}
		for _, b := range backends {
			if err := b.Output().Poll(); err != nil {
				t.Fatalf("reading the backend's output: %v", err)
			}
			for _, r := range Spans(b.Output().Lines()) {
				seen[r.Key] = true
			}
		}
		missing := 0
		for k := range acked {
			if !seen[k] {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("%d of %d acknowledged spans still missing at the backend after %v", missing, len(acked), timeout)
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
