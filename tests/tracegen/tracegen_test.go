package tracegen

import (
	"bytes"
	"context"
	"net"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
)

var fixedBase = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// rec is one span as sent, with its resource.
type rec struct {
	batch   int
	service string
	hostID  string
	span    ptrace.Span
}

func (r rec) key() SpanKey { return SpanKey{r.span.TraceID(), r.span.SpanID()} }

func flatten(batches []ptrace.Traces) []rec {
	var out []rec
	for b, td := range batches {
		rss := td.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			rs := rss.At(i)
			svc, _ := rs.Resource().Attributes().Get("service.name")
			host, _ := rs.Resource().Attributes().Get("host.id")
			for j := 0; j < rs.ScopeSpans().Len(); j++ {
				sps := rs.ScopeSpans().At(j).Spans()
				for k := 0; k < sps.Len(); k++ {
					out = append(out, rec{batch: b, service: svc.Str(), hostID: host.Str(), span: sps.At(k)})
				}
			}
		}
	}
	return out
}

// byTrace groups records by the trace of the ground truth they belong to
// (so a zero-trace-id span stays with its trace).
func byTrace(t *testing.T, truth *Truth, recs []rec) map[int][]rec {
	t.Helper()
	keys := truth.Keys()
	m := map[int][]rec{}
	for _, r := range recs {
		i, ok := keys[r.key()]
		if !ok {
			t.Fatalf("record %v is not in the ground truth", r.key())
		}
		m[i] = append(m[i], r)
	}
	return m
}

func mustGenerate(t *testing.T, cfg Config) ([]ptrace.Traces, *Truth) {
	t.Helper()
	b, tr, err := Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b, tr
}

func marshalAll(t *testing.T, batches []ptrace.Traces) []byte {
	t.Helper()
	var m ptrace.ProtoMarshaler
	var out []byte
	for _, td := range batches {
		b, err := m.MarshalTraces(td)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

func TestDeterministicWithSeed(t *testing.T) {
	cfg := Config{Seed: 42, Traces: 60, BaseTime: fixedBase, Broken: AllBrokenKinds(), BrokenEvery: 3}
	b1, t1 := mustGenerate(t, cfg)
	b2, t2 := mustGenerate(t, cfg)
	if !bytes.Equal(marshalAll(t, b1), marshalAll(t, b2)) {
		t.Fatal("same config and seed produced different batches")
	}
	if !reflect.DeepEqual(t1.Traces, t2.Traces) {
		t.Fatal("same config and seed produced different ground truth")
	}
	cfg.Seed = 43
	_, t3 := mustGenerate(t, cfg)
	if t3.Traces[0].TraceID == t1.Traces[0].TraceID {
		t.Fatal("a different seed produced the same first trace id")
	}
	// A plan depends on (seed, index) only, not on batching or sharding.
	g := MustNew(Config{Seed: 42, Traces: 60, BaseTime: fixedBase, SpansPerBatch: 7, Interleave: 3, Broken: AllBrokenKinds(), BrokenEvery: 3})
	for i := range 60 {
		if !reflect.DeepEqual(g.Plan(i).Truth, t1.Traces[i]) {
			t.Fatalf("trace %d differs with other batching options", i)
		}
	}
}

func TestSpanCountsAndShape(t *testing.T) {
	cfg := Config{Seed: 7, Traces: 300, BaseTime: fixedBase}
	g := MustNew(cfg)
	kinds := map[ptrace.SpanKind]int{}
	events := 0
	for i := range cfg.Traces {
		tr := g.Plan(i)
		n := len(tr.Spans)
		if n < 5 || n > 50 {
			t.Fatalf("trace %d has %d spans, want 5..50", i, n)
		}
		if tr.Truth.Records != n || len(tr.Truth.Spans) != n {
			t.Fatalf("trace %d: truth records %d / keys %d, want %d", i, tr.Truth.Records, len(tr.Truth.Spans), n)
		}
		if len(tr.Truth.Services) < 2 {
			t.Fatalf("trace %d spans %v, want at least 2 services", i, tr.Truth.Services)
		}
		for _, s := range tr.Spans {
			kinds[s.Kind]++
			events += len(s.Events)
			if len(s.Attrs) != 10 {
				t.Fatalf("span %s has %d attributes, want 10", s.Name, len(s.Attrs))
			}
		}
	}
	for _, k := range []ptrace.SpanKind{ptrace.SpanKindServer, ptrace.SpanKindClient, ptrace.SpanKindInternal, ptrace.SpanKindProducer, ptrace.SpanKindConsumer} {
		if kinds[k] == 0 {
			t.Errorf("no span of kind %v", k)
		}
	}
	if events == 0 {
		t.Error("no events")
	}
	t.Logf("kinds %v, %d events", kinds, events)

	// Attribute count is configurable.
	g2 := MustNew(Config{Seed: 7, Traces: 3, Attributes: 20, MinSpans: 3, MaxSpans: 3, BaseTime: fixedBase})
	for i := range 3 {
		tr := g2.Plan(i)
		if len(tr.Spans) != 3 {
			t.Fatalf("MinSpans=MaxSpans=3 gave %d spans", len(tr.Spans))
		}
		for _, s := range tr.Spans {
			if len(s.Attrs) != 20 {
				t.Fatalf("got %d attributes, want 20", len(s.Attrs))
			}
		}
	}
}

func TestHealthyTracesAreConsistent(t *testing.T) {
	batches, truth := mustGenerate(t, Config{Seed: 11, Traces: 200, BaseTime: fixedBase, Services: 8})
	recs := flatten(batches)
	if len(recs) != truth.Records() {
		t.Fatalf("%d records, truth %d", len(recs), truth.Records())
	}
	for i, trecs := range byTrace(t, truth, recs) {
		tt := truth.Traces[i]
		ids := map[pcommon.SpanID]rec{}
		roots := 0
		for _, r := range trecs {
			if _, dup := ids[r.span.SpanID()]; dup {
				t.Fatalf("trace %d: duplicate span id", i)
			}
			ids[r.span.SpanID()] = r
			if r.span.ParentSpanID().IsEmpty() {
				roots++
				if r.span.SpanID() != tt.RootSpanID || r.span.Kind() != ptrace.SpanKindServer {
					t.Fatalf("trace %d: unexpected root %s", i, r.span.Name())
				}
			}
			if r.span.Flags()&flagSampled == 0 || r.span.Flags()&flagRemoteKnown == 0 {
				t.Fatalf("trace %d: flags %#x", i, r.span.Flags())
			}
			if r.span.EndTimestamp() < r.span.StartTimestamp() {
				t.Fatalf("trace %d: negative duration", i)
			}
			if r.span.EndTimestamp().AsTime().After(fixedBase) {
				t.Fatalf("trace %d: span ends after BaseTime", i)
			}
		}
		if roots != 1 {
			t.Fatalf("trace %d has %d roots", i, roots)
		}
		for _, r := range trecs {
			pid := r.span.ParentSpanID()
			if pid.IsEmpty() {
				continue
			}
			p, ok := ids[pid]
			if !ok {
				t.Fatalf("trace %d: span %s has a missing parent", i, r.span.Name())
			}
			if r.span.StartTimestamp() < p.span.StartTimestamp() || r.span.EndTimestamp() > p.span.EndTimestamp() {
				t.Fatalf("trace %d: child %s outside parent %s", i, r.span.Name(), p.span.Name())
			}
			remote := r.service != p.service
			if remote != (r.span.Flags()&flagRemote != 0) {
				t.Fatalf("trace %d: remote flag %#x but services %s→%s", i, r.span.Flags(), p.service, r.service)
			}
			if remote {
				if r.hostID == p.hostID {
					t.Fatalf("trace %d: different services on one host", i)
				}
				pk, ck := p.span.Kind(), r.span.Kind()
				if !(pk == ptrace.SpanKindClient && ck == ptrace.SpanKindServer) && !(pk == ptrace.SpanKindProducer && ck == ptrace.SpanKindConsumer) {
					t.Fatalf("trace %d: cross-service edge %v→%v", i, pk, ck)
				}
			}
		}
	}
	// Resources carry the identifying attributes.
	rs := batches[0].ResourceSpans().At(0).Resource().Attributes()
	for _, k := range []string{"service.name", "service.instance.id", "host.name", "host.id"} {
		if v, ok := rs.Get(k); !ok || v.Str() == "" {
			t.Errorf("resource lacks %s", k)
		}
	}
}

func TestBrokenKindsAreBroken(t *testing.T) {
	const perKind = 8
	all := AllBrokenKinds()
	cfg := Config{Seed: 3, Traces: perKind * len(all), BaseTime: fixedBase, Broken: all, BrokenEvery: 1}
	batches, truth := mustGenerate(t, cfg)
	recs := flatten(batches)
	if len(recs) != truth.Records() {
		t.Fatalf("%d records, truth %d", len(recs), truth.Records())
	}
	grouped := byTrace(t, truth, recs)
	for _, k := range all {
		if n := len(truth.OfKind(k)); n != perKind {
			t.Fatalf("%d traces of kind %s, want %d", n, k, perKind)
		}
	}
	for i, tt := range truth.Traces {
		trecs := grouped[i]
		if tt.Broken == "" || tt.Affected.IsZero() && tt.Broken != ZeroSpanID {
			t.Fatalf("trace %d: broken %q, affected %v", i, tt.Broken, tt.Affected)
		}
		ids := map[pcommon.SpanID]rec{}
		count := map[SpanKey][]rec{}
		roots := 0
		for _, r := range trecs {
			ids[r.span.SpanID()] = r
			count[r.key()] = append(count[r.key()], r)
			if r.span.ParentSpanID().IsEmpty() {
				roots++
			}
		}
		aff := count[tt.Affected]
		if len(aff) == 0 && tt.Broken != MissingParent {
			t.Fatalf("trace %d (%s): affected span %v not sent", i, tt.Broken, tt.Affected)
		}
		switch tt.Broken {
		case MissingParent:
			if _, sent := ids[tt.MissingParentID]; sent {
				t.Fatalf("trace %d: the missing parent was sent", i)
			}
			orphan := count[tt.Affected][0]
			if orphan.span.ParentSpanID() != tt.MissingParentID {
				t.Fatalf("trace %d: affected span's parent is not the missing one", i)
			}
			if roots != 1 {
				t.Fatalf("trace %d: %d roots", i, roots)
			}
		case TwoRoots:
			if roots != 2 {
				t.Fatalf("trace %d: %d roots, want 2", i, roots)
			}
			if !aff[0].span.ParentSpanID().IsEmpty() {
				t.Fatalf("trace %d: affected span is not a root", i)
			}
		case DuplicateSpan, ConflictingDuplicate:
			if len(aff) != 2 {
				t.Fatalf("trace %d: affected span sent %d times, want 2", i, len(aff))
			}
			if tt.Records != len(tt.Spans)+1 {
				t.Fatalf("trace %d: records %d, keys %d", i, tt.Records, len(tt.Spans))
			}
			same := spanEqual(aff[0].span, aff[1].span)
			if same != (tt.Broken == DuplicateSpan) {
				t.Fatalf("trace %d (%s): copies equal=%v", i, tt.Broken, same)
			}
		case SkewedChild:
			s := aff[0]
			p, ok := ids[s.span.ParentSpanID()]
			if !ok || s.span.Kind() != ptrace.SpanKindServer || p.span.Kind() != ptrace.SpanKindClient || s.hostID == p.hostID {
				t.Fatalf("trace %d: skewed span is not a SERVER under a CLIENT on another host", i)
			}
			if s.span.EndTimestamp() <= p.span.EndTimestamp() {
				t.Fatalf("trace %d: skewed child ends inside its parent", i)
			}
			if d := s.span.StartTimestamp().AsTime().Sub(p.span.StartTimestamp().AsTime()); d < 2*time.Second {
				t.Fatalf("trace %d: skew only %v", i, d)
			}
		case SampledMismatch:
			s := aff[0]
			p := ids[s.span.ParentSpanID()]
			if s.span.Flags()&flagSampled != 0 || p.span.Flags()&flagSampled == 0 || s.service != p.service || s.span.Flags()&flagRemote != 0 {
				t.Fatalf("trace %d: not a sampled flip inside one process: child %#x parent %#x", i, s.span.Flags(), p.span.Flags())
			}
		case FutureTimestamp:
			if !aff[0].span.StartTimestamp().AsTime().After(fixedBase.Add(30 * time.Minute)) {
				t.Fatalf("trace %d: future span starts at %v", i, aff[0].span.StartTimestamp().AsTime())
			}
		case ZeroTraceID:
			if !aff[0].span.TraceID().IsEmpty() || aff[0].span.SpanID().IsEmpty() {
				t.Fatalf("trace %d: want an empty trace id", i)
			}
		case ZeroSpanID:
			if !aff[0].span.SpanID().IsEmpty() || aff[0].span.TraceID() != tt.TraceID {
				t.Fatalf("trace %d: want an empty span id", i)
			}
		}
		if tt.PDataOnly != tt.Broken.PDataOnly() {
			t.Fatalf("trace %d: PDataOnly mismatch", i)
		}
	}
}

func spanEqual(a, b ptrace.Span) bool {
	return a.Name() == b.Name() && a.StartTimestamp() == b.StartTimestamp() && a.EndTimestamp() == b.EndTimestamp() &&
		a.ParentSpanID() == b.ParentSpanID() && a.Flags() == b.Flags() &&
		reflect.DeepEqual(a.Attributes().AsRaw(), b.Attributes().AsRaw()) && a.Events().Len() == b.Events().Len()
}

func TestBrokenEveryPeriod(t *testing.T) {
	g := MustNew(Config{Seed: 1, Traces: 40, Broken: []BrokenKind{TwoRoots, SkewedChild}})
	var got []BrokenKind
	for i := range 40 {
		got = append(got, g.BrokenKindOf(i))
	}
	for i, k := range got {
		want := BrokenKind("")
		if i%10 == 9 {
			want = []BrokenKind{TwoRoots, SkewedChild}[(i/10)%2]
		}
		if k != want {
			t.Fatalf("trace %d: %q, want %q", i, k, want)
		}
	}
}

func TestBatchesInterleaveAndShard(t *testing.T) {
	cfg := Config{Seed: 5, Traces: 120, SpansPerBatch: 50, Interleave: 8, BaseTime: fixedBase}
	batches, truth := mustGenerate(t, cfg)
	for i, td := range batches {
		n := td.SpanCount()
		if n > 50 || (n != 50 && i != len(batches)-1) {
			t.Fatalf("batch %d has %d spans", i, n)
		}
	}
	recs := flatten(batches)
	if len(recs) != truth.Records() || len(truth.Traces) != 120 {
		t.Fatalf("records %d vs %d, traces %d", len(recs), truth.Records(), len(truth.Traces))
	}
	inBatches := map[pcommon.TraceID]map[int]bool{}
	for _, r := range recs {
		if inBatches[r.span.TraceID()] == nil {
			inBatches[r.span.TraceID()] = map[int]bool{}
		}
		inBatches[r.span.TraceID()][r.batch] = true
	}
	multi := 0
	for _, tt := range truth.Traces {
		if len(inBatches[tt.TraceID]) > 1 {
			multi++
		}
	}
	if multi < 60 {
		t.Fatalf("only %d of 120 traces spread over several batches", multi)
	}
	t.Logf("%d batches; %d of 120 traces arrive in several batches", len(batches), multi)

	// Shards partition the workload.
	g := MustNew(cfg)
	var union []int
	for s := range 3 {
		b := g.Batches(s, 3)
		for range b.All() {
		}
		for _, tt := range b.Truth().Traces {
			if tt.Index%3 != s {
				t.Fatalf("shard %d got trace %d", s, tt.Index)
			}
			union = append(union, tt.Index)
		}
	}
	slices.Sort(union)
	for i, v := range union {
		if v != i {
			t.Fatalf("shards do not cover the workload: %v", union)
		}
	}
}

func TestParseBrokenKinds(t *testing.T) {
	ks, err := ParseBrokenKinds("missing-parent, two_roots,missing_parent")
	if err != nil || !slices.Equal(ks, []BrokenKind{MissingParent, TwoRoots}) {
		t.Fatalf("got %v, %v", ks, err)
	}
	if ks, _ := ParseBrokenKinds("all"); len(ks) != len(AllBrokenKinds()) {
		t.Fatal("all")
	}
	if ks, err := ParseBrokenKinds(""); ks != nil || err != nil {
		t.Fatal("empty")
	}
	if _, err := ParseBrokenKinds("nope"); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if _, err := New(Config{MinSpans: 2}); err == nil {
		t.Fatal("MinSpans 2 accepted")
	}
}

func TestLoopbackOnly(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:4317", "localhost:1", "[::1]:4317", "127.1.2.3:9"} {
		if err := CheckLoopback(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"10.0.0.1:4317", "example.com:4317", "0.0.0.0:4317", "192.168.1.1:1", "127.0.0.1"} {
		if err := CheckLoopback(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
		if _, err := Dial(bad); err == nil {
			t.Errorf("Dial(%s) accepted", bad)
		}
	}
}

// fakeReceiver is an in-process OTLP gRPC trace receiver on 127.0.0.1.
type fakeReceiver struct {
	ptraceotlp.UnimplementedGRPCServer
	mu       sync.Mutex
	batches  []ptrace.Traces
	addr     string
	requests int
}

func (f *fakeReceiver) Export(_ context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	td := ptrace.NewTraces()
	req.Traces().CopyTo(td)
	f.mu.Lock()
	f.batches = append(f.batches, td)
	f.requests++
	f.mu.Unlock()
	return ptraceotlp.NewExportResponse(), nil
}

func startFake(t *testing.T) *fakeReceiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeReceiver{addr: l.Addr().String()}
	s := grpc.NewServer()
	ptraceotlp.RegisterGRPCServer(s, f)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return f
}

func (f *fakeReceiver) received() []ptrace.Traces {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.batches)
}

func checkReceived(t *testing.T, g *Generator, res SendResult, got []rec) {
	t.Helper()
	if len(got) != res.Truth.Records() || res.Spans != len(got) {
		t.Fatalf("received %d records, truth %d, result %d", len(got), res.Truth.Records(), res.Spans)
	}
	gotCount := map[SpanKey]int{}
	for _, r := range got {
		gotCount[r.key()]++
	}
	for _, tt := range res.Truth.Traces {
		for _, k := range tt.Spans {
			want := 1
			if (tt.Broken == DuplicateSpan || tt.Broken == ConflictingDuplicate) && k == tt.Affected {
				want = 2
			}
			if gotCount[k] != want {
				t.Fatalf("trace %d (%q): key %v received %d times, want %d", tt.Index, tt.Broken, k, gotCount[k], want)
			}
		}
	}
	// Every received span matches its plan: parent, kind, times, flags,
	// attributes, service.
	plans := map[SpanKey][]*Span{}
	for _, tt := range res.Truth.Traces {
		for _, s := range g.Plan(tt.Index).Emit {
			plans[s.Key()] = append(plans[s.Key()], s)
		}
	}
	for _, r := range got {
		var match *Span
		for _, s := range plans[r.key()] {
			if s.End.Equal(r.span.EndTimestamp().AsTime()) {
				match = s
			}
		}
		if match == nil {
			t.Fatalf("received span %v %s has no plan with its end time", r.key(), r.span.Name())
		}
		if r.span.ParentSpanID() != match.ParentSpanID || r.span.Name() != match.Name || r.span.Kind() != match.Kind ||
			!r.span.StartTimestamp().AsTime().Equal(match.Start) || r.span.Flags() != match.Flags ||
			r.span.Attributes().Len() != len(match.Attrs) || r.span.Events().Len() != len(match.Events) ||
			r.service != g.Services()[match.Service].Name {
			t.Fatalf("received span %v differs from its plan: parent %s/%s flags %#x/%#x kind %v/%v attrs %d/%d svc %s",
				r.key(), r.span.ParentSpanID(), match.ParentSpanID, r.span.Flags(), match.Flags, r.span.Kind(), match.Kind,
				r.span.Attributes().Len(), len(match.Attrs), r.service)
		}
		if match.Error != (r.span.Status().Code() == ptrace.StatusCodeError) {
			t.Fatalf("received span %v: status %v", r.key(), r.span.Status().Code())
		}
	}
}

func TestSendSDKMatchesPlan(t *testing.T) {
	f := startFake(t)
	g := MustNew(Config{Seed: 8, Traces: 45, Services: 4, Broken: AllBrokenKinds(), BrokenEvery: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := SendSDK(ctx, g, SendOptions{Endpoint: f.addr, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stopped || res.Traces != 45 {
		t.Fatalf("stopped=%v traces=%d", res.Stopped, res.Traces)
	}
	checkReceived(t, g, res, flatten(f.received()))
	t.Logf("SDK: %d traces, %d spans, %d requests in %v", res.Traces, res.Spans, res.Requests, res.Elapsed)
}

func TestSendPDataConcurrent(t *testing.T) {
	f := startFake(t)
	g := MustNew(Config{Seed: 9, Traces: 90, SpansPerBatch: 64, Broken: AllBrokenKinds(), BrokenEvery: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := SendPData(ctx, g, SendOptions{Endpoint: f.addr, Concurrency: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stopped || res.Traces != 90 || res.Requests != f.requests {
		t.Fatalf("stopped=%v traces=%d requests=%d/%d", res.Stopped, res.Traces, res.Requests, f.requests)
	}
	checkReceived(t, g, res, flatten(f.received()))
}

func TestSendStopsAtDeadlineAndRate(t *testing.T) {
	f := startFake(t)
	g := MustNew(Config{Seed: 10, Traces: 1_000_000, SpansPerBatch: 100, LiveClock: true})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := SendPData(ctx, g, SendOptions{Endpoint: f.addr, Concurrency: 2, SpansPerSecond: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Stopped || time.Since(start) > 5*time.Second {
		t.Fatalf("did not stop at the deadline: stopped=%v after %v", res.Stopped, time.Since(start))
	}
	// 2000 spans/s for 0.5s: about 1000 spans, plus the first batch per sender.
	if res.Spans > 1600 {
		t.Fatalf("sent %d spans in 0.5s at 2000 spans/s", res.Spans)
	}
	t.Logf("sent %d spans in %v (rate-limited)", res.Spans, res.Elapsed)
}
