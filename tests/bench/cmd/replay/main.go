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
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
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
	g, err := tracegen.New(tracegen.Config{Seed: *seed, Traces: *traces})
	if err != nil {
		fmt.Fprintln(stderr, "replay:", err)
		return 2
	}
	// Serialize each worker's share once, before any timing: runs r = w, w+C, w+2C, ...
	// of the workload split into R runs.
	shares := make([][]request, *concurrency)
	poolSpans := 0
	m := &ptrace.ProtoMarshaler{}
	runs := max(*concurrency, *traces/tracesPerRun)
	for r := 0; r < runs; r++ {
		w := r % *concurrency
		for td := range g.Batches(r, runs).All() {
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
			shares[w] = append(shares[w], request{data: b, spans: td.SpanCount(), ids: ids})
			poolSpans += td.SpanCount()
		}
		if n := len(shares[w]); n > 0 {
			shares[w][n-1].cut = true
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()

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
					if err := send(r.data); err != nil {
						errs[w] = fmt.Errorf("sender %d: %w", w, err)
						return
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
