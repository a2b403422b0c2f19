package e2e

// Crash tests of the write-ahead log with the built collector: a gateway with
// traceconsistency and wal.directory set is killed with SIGKILL at random
// moments while clients send, and restarted on the same directory and port.
// Everything listens on 127.0.0.1; every wait is bounded.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/internal/names"
	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

const (
	metricWALRedelivered     = names.MetricPrefix + "wal_redelivered_spans"
	metricWALSpansReplayed   = names.MetricPrefix + "wal_spans_replayed"
	metricWALRecords         = names.MetricPrefix + "wal_records_replayed"
	metricWALTracesRecovered = names.MetricPrefix + "wal_traces_recovered"
	metricWALTorn            = names.MetricPrefix + "wal_torn_records"
	metricWALCorrupt         = names.MetricPrefix + "wal_corrupt_records"
)

// kill9 kills c with SIGKILL and waits for it; c's cleanup then has nothing to do.
func kill9(c *Collector) {
	c.stopOnce.Do(func() {
		defer c.logFile.Close()
		_ = c.cmd.Process.Kill()
		<-c.done
	})
}

// crashTrace is one test trace: children (sent first, in one request) and a root (sent
// later, in another).
type crashTrace struct {
	id       pcommon.TraceID
	children ptrace.Traces
	root     ptrace.Traces
	keys     []tracegen.SpanKey // children first, root last
}

func newCrashTrace(rng *rand.Rand, seq int) crashTrace {
	var id pcommon.TraceID
	for i := range id {
		id[i] = byte(rng.Uint32())
	}
	id[0] = 0x77
	now := time.Now()
	mk := func(spanNo byte, parent byte, children bool) (ptrace.Traces, tracegen.SpanKey) {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", fmt.Sprintf("crash-svc-%d", spanNo%3))
		sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		sid := pcommon.SpanID{0x11, 6: byte(seq), 7: spanNo}
		sid[5] = byte(seq >> 8)
		sid[4] = byte(seq >> 16)
		sp.SetTraceID(id)
		sp.SetSpanID(sid)
		if parent != 0 {
			psid := sid
			psid[7] = parent
			sp.SetParentSpanID(psid)
		}
		sp.SetName(fmt.Sprintf("op-%d", spanNo))
		sp.SetStartTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Second + time.Duration(spanNo)*time.Millisecond)))
		sp.SetEndTimestamp(pcommon.NewTimestampFromTime(now.Add(-time.Duration(spanNo) * time.Millisecond)))
		return td, tracegen.SpanKey{TraceID: id, SpanID: sid}
	}
	t := crashTrace{id: id, children: ptrace.NewTraces()}
	for c := byte(2); c <= 4; c++ {
		td, k := mk(c, 1, true)
		td.ResourceSpans().MoveAndAppendTo(t.children.ResourceSpans())
		t.keys = append(t.keys, k)
	}
	root, k := mk(1, 0, false)
	t.root = root
	t.keys = append(t.keys, k)
	return t
}

// crashClient sends traces, children first and roots later, remembering what was
// acknowledged. Its state survives the gateway's restarts.
type crashClient struct {
	rng     *rand.Rand
	seq     int
	base    int
	pending []crashTrace // children acknowledged, root not yet
	acked   map[tracegen.SpanKey]int
	traces  map[pcommon.TraceID]crashTrace
	// rootAcked: traces whose every span was acknowledged.
	rootAcked map[pcommon.TraceID]bool
	// resent: spans sent more than once by this client (a root retried after an error):
	// they may legitimately arrive twice.
	resent map[tracegen.SpanKey]bool
	tried  map[pcommon.TraceID]bool
	errors int
}

func newCrashClient(seed uint64, base int) *crashClient {
	return &crashClient{
		rng: rand.New(rand.NewPCG(seed, 99)), base: base,
		acked: map[tracegen.SpanKey]int{}, traces: map[pcommon.TraceID]crashTrace{},
		rootAcked: map[pcommon.TraceID]bool{}, resent: map[tracegen.SpanKey]bool{}, tried: map[pcommon.TraceID]bool{},
	}
}

func (c *crashClient) sendRoot(ctx context.Context, cl *tracegen.Client, t crashTrace) bool {
	root := t.keys[len(t.keys)-1]
	if c.tried[t.id] {
		c.resent[root] = true
	}
	c.tried[t.id] = true
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := cl.Export(rctx, t.root); err != nil {
		c.errors++
		return false
	}
	c.acked[root]++
	c.rootAcked[t.id] = true
	return true
}

// run sends until ctx ends: a new trace's children, then, once five are pending, the
// oldest pending root (kept pending when refused).
func (c *crashClient) run(ctx context.Context, cl *tracegen.Client) {
	for ctx.Err() == nil {
		c.seq++
		t := newCrashTrace(c.rng, c.base+c.seq)
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cl.Export(rctx, t.children)
		cancel()
		if err != nil {
			c.errors++
			time.Sleep(20 * time.Millisecond)
		} else {
			for _, k := range t.keys[:len(t.keys)-1] {
				c.acked[k]++
			}
			c.traces[t.id] = t
			c.pending = append(c.pending, t)
		}
		if len(c.pending) > 5 {
			if c.sendRoot(ctx, cl, c.pending[0]) {
				c.pending = c.pending[1:]
			}
		}
	}
}

// finish sends every pending root, retrying until deadline.
func (c *crashClient) finish(t *testing.T, cl *tracegen.Client, deadline time.Time) {
	for len(c.pending) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d roots still refused at the deadline", len(c.pending))
		}
		if c.sendRoot(context.Background(), cl, c.pending[0]) {
			c.pending = c.pending[1:]
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// TestCrashKill9AndRestartDeliversEveryAcknowledgedSpan: two clients send traces whose
// children and roots travel in separate requests, while the gateway is killed with SIGKILL
// at random moments, five times, and restarted on the same write-ahead log. Afterwards every
// span acknowledged with success has arrived at the backend at least once; every trace
// whose spans were all acknowledged arrived whole in one request (one release, even when
// the crash cut it in two); and the spans that arrived more than once (minus roots the
// clients themselves sent twice) are no more than what the restarted gateways reported as
// possibly re-delivered (handed downstream before the crash, not acknowledged).
//
// Without the log, the spans buffered at each kill were lost: the first check fails.
func TestCrashKill9AndRestartDeliversEveryAcknowledgedSpan(t *testing.T) {
	requireProcessor(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	backend := startBackend(t, FreeAddr(t))
	walDir := filepath.Join(t.TempDir(), "wal")
	bin := RequireBinary(t)
	RequireComponents(t, bin, "exporters/otlp_grpc")
	// One address set for every start, so that clients reconnect to the restarted gateway.
	addrs := ConfigOptions{OTLPEndpoint: FreeAddr(t), HealthEndpoint: FreeAddr(t), MetricsPort: FreePort(t)}
	start := func() *Collector {
		exp := fmt.Sprintf("otlp_grpc/backend:\n  endpoint: %s\n  tls:\n    insecure: true\n  sending_queue:\n    enabled: false\n  retry_on_failure:\n    enabled: false\n  timeout: 10s\n", backend.OTLPEndpoint)
		opts := addrs
		opts.ProcessorsYAML = TraceConsistencyYAML("quiet_period: 300ms", "release_tick: 50ms", "idle_timeout: 30s", "max_age: 60s",
			NoRestartWait, fmt.Sprintf("wal: {directory: %s, sync: batch}", walDir))
		opts.ExtraExportersYAML = exp
		opts.Exporters = []string{"otlp_grpc/backend"}
		dir := t.TempDir()
		cfgPath, opts := WriteConfig(t, dir, opts)
		return launch(t, bin, dir, cfgPath, nil, opts, true, func() string { b, _ := os.ReadFile(cfgPath); return string(b) })
	}

	clients := []*crashClient{newCrashClient(seed, 0), newCrashClient(seed+1, 1<<20)}
	var redelivered, replayed float64
	const cycles = 5
	for cycle := 0; cycle <= cycles; cycle++ {
		gw := start()
		if cycle > 0 {
			m := gw.WaitForMetrics(20*time.Second, "the replay counted", func(m Metrics) bool { return m.Has(metricWALRecords) })
			redelivered += m.Sum(metricWALRedelivered)
			replayed += m.Sum(metricWALSpansReplayed)
			t.Logf("restart %d: %v records, %v spans replayed, %v traces recovered, %v possibly re-delivered, %v torn, %v corrupt",
				cycle, m.Sum(metricWALRecords), m.Sum(metricWALSpansReplayed), m.Sum(metricWALTracesRecovered),
				m.Sum(metricWALRedelivered), m.Sum(metricWALTorn), m.Sum(metricWALCorrupt))
			if m.Sum(metricWALCorrupt) != 0 {
				t.Errorf("restart %d: a crash left corrupt records (only torn tails are expected)", cycle)
			}
		}
		conns := make([]*tracegen.Client, len(clients))
		for i := range conns {
			cl, err := tracegen.Dial(gw.OTLPEndpoint)
			if err != nil {
				t.Fatal(err)
			}
			conns[i] = cl
		}
		if cycle == cycles {
			// The last start: send every pending root, then stop gracefully.
			for i, c := range clients {
				c.finish(t, conns[i], time.Now().Add(60*time.Second))
			}
			want := 0
			for _, c := range clients {
				want += len(c.acked)
			}
			waitDistinctSpans(t, backend, want, 60*time.Second)
			if err := gw.Stop(); err != nil {
				t.Errorf("final stop: %v", err)
			}
			for _, cl := range conns {
				cl.Close()
			}
			break
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for i, c := range clients {
			wg.Add(1)
			go func() { defer wg.Done(); c.run(ctx, conns[i]) }()
		}
		time.Sleep(time.Duration(300+rng.IntN(1700)) * time.Millisecond)
		kill9(gw)
		cancel()
		wg.Wait()
		for _, cl := range conns {
			cl.Close()
		}
	}

	recs := Spans(backend.StopAndRead())
	got := map[tracegen.SpanKey]int{}
	lines := map[tracegen.SpanKey][]int{}
	for _, r := range recs {
		got[r.Key]++
		lines[r.Key] = append(lines[r.Key], r.Line)
	}
	el := newErrorLimiter(t)
	defer el.Summary()
	acked, lost, dups, clientResent, whole, errs := 0, 0, 0, 0, 0, 0
	for _, c := range clients {
		errs += c.errors
		for k := range c.acked {
			acked++
			if got[k] == 0 {
				lost++
				el.Errorf("acknowledged span lost", "span %v was acknowledged and never arrived", k)
			}
		}
		for k, n := range got {
			if n <= 1 {
				continue
			}
			if c.resent[k] {
				clientResent += n - 1
			} else if _, mine := c.traces[k.TraceID]; mine {
				dups += n - 1
			}
		}
		// Whole: one output line holds every span of the trace.
		for id, ok := range c.rootAcked {
			if !ok {
				continue
			}
			tr := c.traces[id]
			if !oneLineHoldsAll(tr.keys, lines) {
				el.Errorf("trace split", "trace %v: no single release holds its %d spans (lines %v)", id, len(tr.keys), linesOf(tr.keys, lines))
			} else {
				whole++
			}
		}
	}
	t.Logf("%d kills; %d spans acknowledged, %d records at the backend, %d lost; %d traces whole; %d spans re-delivered (%d more sent twice by the clients); gateways reported %v possibly re-delivered and %v replayed; %d client requests failed around the kills",
		cycles, acked, len(recs), lost, whole, dups, clientResent, redelivered, replayed, errs)
	if lost > 0 {
		t.Errorf("%d acknowledged spans lost", lost)
	}
	if float64(dups) > redelivered {
		t.Errorf("%d spans arrived twice, more than the %v the gateways reported as in flight at the kills", dups, redelivered)
	}
	if replayed == 0 {
		t.Errorf("no span was replayed in %d kills: the kills did not catch buffered data", cycles)
	}
}

func oneLineHoldsAll(keys []tracegen.SpanKey, lines map[tracegen.SpanKey][]int) bool {
	count := map[int]int{}
	for _, k := range keys {
		seen := map[int]bool{}
		for _, l := range lines[k] {
			if !seen[l] {
				seen[l] = true
				count[l]++
			}
		}
	}
	for _, n := range count {
		if n == len(keys) {
			return true
		}
	}
	return false
}

func linesOf(keys []tracegen.SpanKey, lines map[tracegen.SpanKey][]int) []int {
	var out []int
	for _, k := range keys {
		out = append(out, lines[k]...)
	}
	sort.Ints(out)
	return out
}

// waitDistinctSpans polls c's output until it holds n distinct spans (bounded).
func waitDistinctSpans(t *testing.T, c *Collector, n int, timeout time.Duration) {
	t.Helper()
	c.WaitFor(timeout, fmt.Sprintf("%d distinct spans", n), func(lines []Line) bool {
		seen := map[tracegen.SpanKey]bool{}
		for _, r := range Spans(lines) {
			seen[r.Key] = true
		}
		return len(seen) >= n
	})
}

// walSegments lists the non-empty segment files of a log directory, oldest first.
func walSegments(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if filepath.Ext(e.Name()) != ".wal" {
			continue
		}
		if info, err := e.Info(); err == nil && info.Size() > 0 {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(out)
	return out
}

// TestCrashDamagedLogStartsAndReplaysWhatIsIntact: ten single-request traces are buffered
// and the gateway is killed; the log's last record is cut short (a torn write) and the
// gateway restarts: it replays the nine intact batches and counts one torn record. Killed
// again, a byte in the middle of the first segment is flipped: it starts again, skips only
// the damaged batch, counts one corrupt record and logs the file. After a clean stop the
// backend has exactly the spans of the batches that were intact.
func TestCrashDamagedLogStartsAndReplaysWhatIsIntact(t *testing.T) {
	requireProcessor(t)
	backend := startBackend(t, FreeAddr(t))
	walDir := filepath.Join(t.TempDir(), "wal")
	bin := RequireBinary(t)
	addrs := ConfigOptions{OTLPEndpoint: FreeAddr(t), HealthEndpoint: FreeAddr(t), MetricsPort: FreePort(t)}
	start := func() *Collector {
		opts := addrs
		opts.ProcessorsYAML = TraceConsistencyYAML("quiet_period: 300ms", "release_tick: 50ms", "idle_timeout: 60s", "max_age: 120s",
			NoRestartWait, fmt.Sprintf("wal: {directory: %s, sync: batch}", walDir))
		opts.ExtraExportersYAML = fmt.Sprintf("otlp_grpc/backend:\n  endpoint: %s\n  tls:\n    insecure: true\n", backend.OTLPEndpoint)
		opts.Exporters = []string{"otlp_grpc/backend"}
		dir := t.TempDir()
		cfgPath, opts := WriteConfig(t, dir, opts)
		return launch(t, bin, dir, cfgPath, nil, opts, true, func() string { b, _ := os.ReadFile(cfgPath); return string(b) })
	}
	rng := rand.New(rand.NewPCG(7, 7))
	gw := start()
	cl, err := tracegen.Dial(gw.OTLPEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	var traces []crashTrace
	for i := range 10 {
		tr := newCrashTrace(rng, i+1)
		if err := cl.Export(context.Background(), tr.children); err != nil {
			t.Fatal(err)
		}
		traces = append(traces, tr)
	}
	cl.Close()
	kill9(gw)

	segs := walSegments(t, walDir)
	if len(segs) != 1 {
		t.Fatalf("want one segment with data, got %v", segs)
	}
	info, _ := os.Stat(segs[0])
	if err := os.Truncate(segs[0], info.Size()-7); err != nil {
		t.Fatal(err)
	}
	gw = start()
	m := gw.WaitForMetrics(20*time.Second, "the replay counted", func(m Metrics) bool { return m.Has(metricWALTorn) })
	if got, want := m.Sum(metricWALSpansReplayed), 9*3.0; got != want {
		t.Errorf("after a torn last record: %v spans replayed, want %v", got, want)
	}
	if m.Sum(metricWALTorn) != 1 || m.Sum(metricWALCorrupt) != 0 {
		t.Errorf("torn %v, corrupt %v: want 1 and 0", m.Sum(metricWALTorn), m.Sum(metricWALCorrupt))
	}
	kill9(gw)

	raw, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)/2] ^= 0x5a // inside one of the intact batches
	if err := os.WriteFile(segs[0], raw, 0o644); err != nil {
		t.Fatal(err)
	}
	gw = start()
	m = gw.WaitForMetrics(20*time.Second, "the replay counted", func(m Metrics) bool { return m.Has(metricWALCorrupt) })
	if got, want := m.Sum(metricWALSpansReplayed), 8*3.0; got != want {
		t.Errorf("after a flipped byte: %v spans replayed, want %v", got, want)
	}
	if !strings.Contains(gw.Log(), segs[0]) {
		t.Errorf("the log does not name the damaged file %s", segs[0])
	}
	if err := gw.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	recs := Spans(backend.StopAndRead())
	got := map[pcommon.TraceID]int{}
	for _, r := range recs {
		got[r.Key.TraceID]++
	}
	intact := 0
	for _, tr := range traces {
		switch got[tr.id] {
		case 3:
			intact++
		case 0:
		default:
			t.Errorf("trace %v: %d spans delivered, want 3 or 0", tr.id, got[tr.id])
		}
	}
	if intact != 8 || len(recs) != 24 {
		t.Errorf("%d traces with all their spans (%d spans) at the backend: want 8 (24)", intact, len(recs))
	}
}
