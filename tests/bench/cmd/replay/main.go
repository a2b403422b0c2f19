// Command replay is a cheap OTLP/gRPC load source for the collector benchmark
// (scripts/bench-collector.sh, LOADER=replay). It generates a tracegen workload once, keeps
// every export request serialized, and replays the requests over several loopback gRPC
// streams until -duration ends. Each pass over the workload XORs the pass number into the
// first 8 bytes of every trace ID (in place, at offsets found once), so trace IDs never
// repeat and every trace is sent whole. Sending costs a gRPC call on pre-serialized bytes,
// not a trace generation plus a protobuf marshal as in tracegen -mode pdata, so on 2 cores
// the load source takes far less CPU from the collector it drives.
//
//	go run ./bench/cmd/replay -endpoint 127.0.0.1:4317 -duration 20s -concurrency 4 -json
//
// For the tail-sampling benchmark (scripts/bench-tailsampling.sh) it can also limit the
// offered load (-rate), break every Nth trace (-broken, -broken-every), and receive what
// the collector exports (-sink, an OTLP/gRPC receiver on loopback): it then reports, per
// trace that came out, the time from the acknowledgement of the request that carried the
// trace's last span to the first request of the output that carried the trace, split into
// structurally complete traces (one root, every parent present) and the others. With -sink
// it keeps receiving after sending until SIGTERM or -linger, writes -sent-file (what was
// sent) as soon as sending ends, and prints the summary last; -ids-file then lists every
// trace sent whole, one per line: its trace ID in hex and 1 when the sink received any of
// its spans, else 0 (the keep set of a sampling pipeline, compared across pipelines).
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

const exportMethod = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

// rawCodec sends and receives messages as raw bytes (*[]byte).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

// request is one serialized ExportTraceServiceRequest and where its trace IDs are.
type request struct {
	data  []byte
	spans int
	ids   []int // offsets of the 16 trace ID bytes of every span
	// cut: no trace of this request continues in a later one (a run of whole traces ends)
	cut bool
	// ends lists the traces whose last span is in this request (-sink only)
	ends []traceEnd
}

// traceEnd is a trace whose last span is in a request: where its trace ID is in the
// request's bytes (which change every pass), and whether the trace is structurally complete.
type traceEnd struct {
	off      int
	complete bool
	kind     tracegen.BrokenKind // "" for a healthy trace
}

// tracesPerRun is the size of the runs of whole traces a sender's share is made of: once
// -duration is over, a sender finishes its current run, so that no trace is left half sent
// (an assembling processor would hold a half-sent trace until its idle timeout).
const tracesPerRun = 32

// traceIDOffsets walks ExportTraceServiceRequest{1: ResourceSpans{2: ScopeSpans{2: Span{1:
// trace_id}}}} and returns the offset of each span's trace_id value.
func traceIDOffsets(b []byte) ([]int, error) {
	var out []int
	var walk func(b []byte, base int, path []protowire.Number) error
	walk = func(b []byte, base int, path []protowire.Number) error {
		pos := 0
		for pos < len(b) {
			num, typ, n := protowire.ConsumeTag(b[pos:])
			if n < 0 {
				return protowire.ParseError(n)
			}
			pos += n
			if typ != protowire.BytesType {
				m := protowire.ConsumeFieldValue(num, typ, b[pos:])
				if m < 0 {
					return protowire.ParseError(m)
				}
				pos += m
				continue
			}
			v, m := protowire.ConsumeBytes(b[pos:])
			if m < 0 {
				return protowire.ParseError(m)
			}
			start := pos + m - len(v)
			if num == path[0] {
				if len(path) == 1 {
					if len(v) == 16 {
						out = append(out, base+start)
					}
				} else if err := walk(v, base+start, path[1:]); err != nil {
					return err
				}
			}
			pos += m
		}
		return nil
	}
	err := walk(b, 0, []protowire.Number{1, 2, 2, 1})
	return out, err
}

type summary struct {
	Mode           string  `json:"mode"`
	Endpoint       string  `json:"endpoint"`
	PoolTraces     int     `json:"pool_traces"`
	PoolSpans      int     `json:"pool_spans"`
	Spans          int64   `json:"spans"`
	Requests       int64   `json:"requests"`
	Passes         int64   `json:"passes"`
	Seconds        float64 `json:"seconds"`
	SpansPerSecond float64 `json:"spans_per_second"`
	Error          string  `json:"error,omitempty"`
	// Traces is the number of traces sent whole (with -sink).
	Traces int64 `json:"traces,omitempty"`
	// Sink: what came out of the collector, and the latency from a trace's last span
	// (acknowledged) to its first output, in milliseconds.
	Sink *sinkSummary `json:"sink,omitempty"`
}

type sinkSummary struct {
	Spans               int64     `json:"spans"`
	Traces              int64     `json:"traces"`
	TracesWithLatency   int64     `json:"traces_with_latency"`
	CompleteLatencyMs   latencyMs `json:"complete_latency_ms"`
	IncompleteLatencyMs latencyMs `json:"incomplete_latency_ms"`
	// CompleteByKindMs splits the complete traces' latency by how the trace was generated:
	// "healthy", or the broken kind (a skewed_child or sampled_mismatch trace is complete).
	CompleteByKindMs map[string]latencyMs `json:"complete_latency_by_kind_ms"`
	// CompleteLaterHalfMs: the complete traces whose last span was sent in the second half of
	// the sending time (the steady state, apart from whatever a pipeline learns at its start).
	CompleteLaterHalfMs latencyMs `json:"complete_latency_later_half_ms"`
}

type latencyMs struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func latencyOf(v []time.Duration) latencyMs {
	if len(v) == 0 {
		return latencyMs{}
	}
	sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
	q := func(p float64) float64 {
		return float64(v[min(len(v)-1, int(p*float64(len(v))))].Microseconds()) / 1000
	}
	return latencyMs{N: len(v), P50: q(0.5), P90: q(0.9), P99: q(0.99), Max: float64(v[len(v)-1].Microseconds()) / 1000}
}

// sink is an OTLP/gRPC trace receiver that records when each trace ID first comes out.
type sink struct {
	ptraceotlp.UnimplementedGRPCServer
	mu    sync.Mutex
	first map[pcommon.TraceID]time.Time
	spans atomic.Int64
}

func (s *sink) Export(_ context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	now := time.Now()
	td := req.Traces()
	s.spans.Add(int64(td.SpanCount()))
	s.mu.Lock()
	defer s.mu.Unlock()
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				id := spans.At(k).TraceID()
				if _, ok := s.first[id]; !ok {
					s.first[id] = now
				}
			}
		}
	}
	return ptraceotlp.NewExportResponse(), nil
}

// writeIDs writes every sent trace ID with 1 when it came out, else 0, sorted by ID.
func writeIDs(path string, sent map[pcommon.TraceID]sentTrace, out map[pcommon.TraceID]time.Time) error {
	lines := make([]string, 0, len(sent))
	for id := range sent {
		kept := 0
		if _, ok := out[id]; ok {
			kept = 1
		}
		lines = append(lines, fmt.Sprintf("%s %d\n", id, kept))
	}
	sort.Strings(lines)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for _, l := range lines {
		if _, err := io.WriteString(f, l); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// pacer spaces requests so that all senders together offer about 1/per spans per second; a
// sender that fell behind does not burst to catch up.
type pacer struct {
	mu   sync.Mutex
	next time.Time
	per  time.Duration // per span
}

func (p *pacer) wait(spans int) {
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(time.Duration(spans) * p.per)
	p.mu.Unlock()
	time.Sleep(time.Until(at))
}

// sentLog records when each trace's last span was acknowledged.
type sentLog struct {
	mu   sync.Mutex
	last map[pcommon.TraceID]sentTrace
}

type sentTrace struct {
	at       time.Time
	complete bool
	kind     tracegen.BrokenKind
}

// traceEnds returns, for one batch, the traces whose last span of the whole workload is in
// it (lastBatch[id] == this batch), each with an offset of its trace ID in data and whether
// it is complete.
func traceEnds(td ptrace.Traces, data []byte, ids []int, isLast func(pcommon.TraceID) bool, complete map[pcommon.TraceID]bool, kinds map[pcommon.TraceID]tracegen.BrokenKind) []traceEnd {
	var out []traceEnd
	seen := map[pcommon.TraceID]bool{}
	for _, off := range ids {
		var id pcommon.TraceID
		copy(id[:], data[off:off+16])
		if seen[id] || !isLast(id) {
			continue
		}
		seen[id] = true
		out = append(out, traceEnd{off: off, complete: complete[id], kind: kinds[id]})
	}
	return out
}

// structure records, per trace of a batch, its span IDs, parents and roots, to tell
// complete traces (one root, every referenced parent present) from the others.
type structure struct {
	spans   map[pcommon.TraceID]map[pcommon.SpanID]bool
	parents map[pcommon.TraceID][]pcommon.SpanID
	roots   map[pcommon.TraceID]int
}

func newStructure() *structure {
	return &structure{spans: map[pcommon.TraceID]map[pcommon.SpanID]bool{}, parents: map[pcommon.TraceID][]pcommon.SpanID{}, roots: map[pcommon.TraceID]int{}}
}

func (st *structure) add(td ptrace.Traces, lastBatch map[pcommon.TraceID]int, batch int) {
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		sss := rss.At(i).ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				sp := spans.At(k)
				id := sp.TraceID()
				lastBatch[id] = batch
				if st.spans[id] == nil {
					st.spans[id] = map[pcommon.SpanID]bool{}
				}
				st.spans[id][sp.SpanID()] = true
				if p := sp.ParentSpanID(); p.IsEmpty() {
					st.roots[id]++
				} else {
					st.parents[id] = append(st.parents[id], p)
				}
			}
		}
	}
}

func (st *structure) complete() map[pcommon.TraceID]bool {
	out := map[pcommon.TraceID]bool{}
	for id, spans := range st.spans {
		ok := st.roots[id] == 1
		for _, p := range st.parents[id] {
			ok = ok && spans[p]
		}
		out[id] = ok
	}
	return out
}

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoint := fs.String("endpoint", tracegen.DefaultEndpoint, "OTLP gRPC endpoint (loopback only)")
	traces := fs.Int("traces", 8000, "traces in the replayed workload (tracegen defaults, ~27 spans each)")
	duration := fs.Duration("duration", 20*time.Second, "send for this long")
	concurrency := fs.Int("concurrency", 4, "concurrent gRPC connections, each with its own share of the workload")
	seed := fs.Int64("seed", 1, "workload seed")
	jsonOut := fs.Bool("json", false, "print the summary as one JSON object")
	spanRate := fs.Float64("rate", 0, "offered load in spans/s over all streams (0 = as fast as the collector takes it)")
	broken := fs.String("broken", "", "broken kinds (tracegen names, comma list) for every -broken-every-th trace")
	brokenEvery := fs.Int("broken-every", 20, "with -broken: every Nth trace is broken")
	errorProb := fs.Float64("error-probability", 0, "chance that a span has an error status (0 = tracegen's default, 0.05)")
	sinkAddr := fs.String("sink", "", "also receive OTLP/gRPC here (loopback) and report per-trace latency from last span to output")
	sentFile := fs.String("sent-file", "", "with -sink: write the send summary (JSON) here when sending ends")
	linger := fs.Duration("linger", 2*time.Minute, "with -sink: keep receiving this long after sending at most (SIGTERM ends it sooner)")
	idsFile := fs.String("ids-file", "", "with -sink: at the end, write every trace sent (hex trace ID) and whether any of its spans came out (1/0), one per line")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := tracegen.CheckLoopback(*endpoint); err != nil {
		fmt.Fprintln(stderr, "replay:", err)
		return 2
	}
	if *concurrency < 1 || *traces < *concurrency || *duration <= 0 {
		fmt.Fprintln(stderr, "replay: need -concurrency >= 1, -traces >= -concurrency, -duration > 0")
		return 2
	}
	cfg := tracegen.Config{Seed: *seed, Traces: *traces, ErrorProbability: *errorProb}
	if *broken != "" {
		kinds, err := tracegen.ParseBrokenKinds(*broken)
		if err != nil {
			fmt.Fprintln(stderr, "replay:", err)
			return 2
		}
		cfg.Broken, cfg.BrokenEvery = kinds, *brokenEvery
	}
	if *sinkAddr != "" {
		if err := tracegen.CheckLoopback(*sinkAddr); err != nil {
			fmt.Fprintln(stderr, "replay: -sink:", err)
			return 2
		}
	}
	g, err := tracegen.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "replay:", err)
		return 2
	}
	// With -sink: the broken kind of every broken trace (by its trace ID in the first pass).
	kinds := map[pcommon.TraceID]tracegen.BrokenKind{}
	if *sinkAddr != "" {
		for i := 0; i < *traces; i++ {
			if g.BrokenKindOf(i) != "" {
				tr := g.Plan(i)
				kinds[tr.TraceID] = tr.Broken
			}
		}
	}
	// Serialize each worker's share once, before any timing: runs r = w, w+C, w+2C, ...
	// of the workload split into R runs.
	shares := make([][]request, *concurrency)
	poolSpans := 0
	m := &ptrace.ProtoMarshaler{}
	runs := max(*concurrency, *traces/tracesPerRun)
	for r := 0; r < runs; r++ {
		w := r % *concurrency
		var batches []ptrace.Traces
		for td := range g.Batches(r, runs).All() {
			batches = append(batches, td)
		}
		// With -sink: which batch of the run holds each trace's last span, and which traces
		// are complete.
		lastBatch := map[pcommon.TraceID]int{}
		var complete map[pcommon.TraceID]bool
		if *sinkAddr != "" {
			st := newStructure()
			for i, td := range batches {
				st.add(td, lastBatch, i)
			}
			complete = st.complete()
		}
		for bi, td := range batches {
			b, err := m.MarshalTraces(td)
			if err != nil {
				fmt.Fprintln(stderr, "replay:", err)
				return 1
			}
			ids, err := traceIDOffsets(b)
			if err != nil || len(ids) != td.SpanCount() {
				fmt.Fprintf(stderr, "replay: indexing trace IDs: %v (%d of %d)\n", err, len(ids), td.SpanCount())
				return 1
			}
			req := request{data: b, spans: td.SpanCount(), ids: ids}
			if *sinkAddr != "" {
				req.ends = traceEnds(td, b, ids, func(id pcommon.TraceID) bool { return lastBatch[id] == bi }, complete, kinds)
			}
			shares[w] = append(shares[w], req)
			poolSpans += td.SpanCount()
		}
		if n := len(shares[w]); n > 0 {
			shares[w][n-1].cut = true
		}
	}

	sigCtx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(sigCtx, *duration)
	defer cancel()

	var recv *sink
	var sent *sentLog
	if *sinkAddr != "" {
		lis, err := net.Listen("tcp", *sinkAddr)
		if err != nil {
			fmt.Fprintln(stderr, "replay: -sink:", err)
			return 1
		}
		srv := grpc.NewServer(grpc.MaxRecvMsgSize(256 << 20))
		recv = &sink{first: map[pcommon.TraceID]time.Time{}}
		ptraceotlp.RegisterGRPCServer(srv, recv)
		go func() { _ = srv.Serve(lis) }()
		defer srv.Stop()
		sent = &sentLog{last: map[pcommon.TraceID]sentTrace{}}
	}
	var limiter *pacer
	if *spanRate > 0 {
		limiter = &pacer{per: time.Duration(float64(time.Second) / *spanRate)}
	}

	var spans, reqs, passes atomic.Int64
	errs := make([]error, *concurrency)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range shares {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := grpc.NewClient("passthrough:///"+*endpoint,
				grpc.WithTransportCredentials(insecure.NewCredentials()),
				grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
			if err != nil {
				errs[w] = err
				return
			}
			defer conn.Close()
			var resp []byte
			// Requests are not cut by -duration: a sender checks it only between runs of
			// whole traces, so it never leaves a trace half sent.
			send := func(data []byte) error {
				c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				return conn.Invoke(c, exportMethod, &data, &resp, grpc.ForceCodec(rawCodec{}), grpc.WaitForReady(true))
			}
			for pass := uint64(0); ; pass++ {
				if pass > 0 {
					x := ((pass - 1) * 0x9e3779b97f4a7c15) ^ (pass * 0x9e3779b97f4a7c15)
					for _, r := range shares[w] {
						for _, off := range r.ids {
							binary.LittleEndian.PutUint64(r.data[off:], binary.LittleEndian.Uint64(r.data[off:])^x)
						}
					}
					passes.Add(1)
				}
				for i, r := range shares[w] {
					if ctx.Err() != nil && (i == 0 || shares[w][i-1].cut) {
						return
					}
					if limiter != nil {
						limiter.wait(r.spans)
					}
					if err := send(r.data); err != nil {
						errs[w] = fmt.Errorf("sender %d: %w", w, err)
						return
					}
					if sent != nil && len(r.ends) > 0 {
						now := time.Now()
						sent.mu.Lock()
						for _, e := range r.ends {
							var id pcommon.TraceID
							copy(id[:], r.data[e.off:e.off+16])
							sent.last[id] = sentTrace{at: now, complete: e.complete, kind: e.kind}
						}
						sent.mu.Unlock()
					}
					spans.Add(int64(r.spans))
					reqs.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	s := summary{Mode: "replay", Endpoint: *endpoint, PoolTraces: *traces, PoolSpans: poolSpans,
		Spans: spans.Load(), Requests: reqs.Load(), Passes: passes.Load(), Seconds: elapsed.Seconds(),
		SpansPerSecond: float64(spans.Load()) / elapsed.Seconds()}
	err = errors.Join(errs...)
	if err != nil {
		s.Error = err.Error()
	}
	if recv != nil {
		s.Traces = int64(len(sent.last))
		if *sentFile != "" {
			b, _ := json.Marshal(s)
			if werr := os.WriteFile(*sentFile+".tmp", b, 0o644); werr == nil {
				_ = os.Rename(*sentFile+".tmp", *sentFile)
			}
		}
		// Keep receiving until told to stop (the caller knows when every decision is out).
		select {
		case <-sigCtx.Done():
		case <-time.After(*linger):
		}
		recv.mu.Lock()
		var done, open []time.Duration
		byKind := map[string][]time.Duration{}
		var later []time.Duration
		half := start.Add(elapsed / 2)
		var matched int64
		for id, st := range sent.last {
			out, ok := recv.first[id]
			if !ok {
				continue
			}
			matched++
			if st.complete {
				done = append(done, out.Sub(st.at))
				k := string(st.kind)
				if k == "" {
					k = "healthy"
				}
				byKind[k] = append(byKind[k], out.Sub(st.at))
				if st.at.After(half) {
					later = append(later, out.Sub(st.at))
				}
			} else {
				open = append(open, out.Sub(st.at))
			}
		}
		s.Sink = &sinkSummary{Spans: recv.spans.Load(), Traces: int64(len(recv.first)), TracesWithLatency: matched,
			CompleteLatencyMs: latencyOf(done), IncompleteLatencyMs: latencyOf(open), CompleteByKindMs: map[string]latencyMs{},
			CompleteLaterHalfMs: latencyOf(later)}
		for k, v := range byKind {
			s.Sink.CompleteByKindMs[k] = latencyOf(v)
		}
		if *idsFile != "" {
			if werr := writeIDs(*idsFile, sent.last, recv.first); werr != nil {
				fmt.Fprintln(stderr, "replay: -ids-file:", werr)
				err = errors.Join(err, werr)
				s.Error = err.Error()
			}
		}
		recv.mu.Unlock()
	}
	if *jsonOut {
		_ = json.NewEncoder(stdout).Encode(s)
	} else {
		fmt.Fprintf(stdout, "replay -> %s: %d spans in %d requests, %.3fs, %.0f spans/s (%d passes over %d spans)\n",
			s.Endpoint, s.Spans, s.Requests, s.Seconds, s.SpansPerSecond, s.Passes, s.PoolSpans)
	}
	if err != nil {
		fmt.Fprintln(stderr, "replay: error:", err)
		return 1
	}
	return 0
}
