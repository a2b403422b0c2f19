package tracegen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultEndpoint is the OTLP gRPC endpoint used when none is given.
const DefaultEndpoint = "127.0.0.1:4317"

// CheckLoopback refuses endpoints that are not on the loopback interface
// (127.0.0.0/8, ::1 or "localhost"): this tool only ever sends to a
// collector on the same machine.
func CheckLoopback(endpoint string) error {
	host, _, err := net.SplitHostPort(endpoint)
	if err != nil {
		return fmt.Errorf("endpoint %q: %w", endpoint, err)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("endpoint %q is not a loopback address (use 127.0.0.1:PORT)", endpoint)
	}
	return nil
}

// Client exports ptrace.Traces over OTLP gRPC (one connection).
type Client struct {
	conn   *grpc.ClientConn
	client ptraceotlp.GRPCClient
}

// Dial connects (lazily) to a loopback OTLP gRPC endpoint, without TLS.
func Dial(endpoint string) (*Client, error) {
	if err := CheckLoopback(endpoint); err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient("passthrough:///"+endpoint,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		return nil, err
	}
	return &Client{conn: conn, client: ptraceotlp.NewGRPCClient(conn)}, nil
}

// Export sends one batch and waits for the response. A partial success that
// rejected spans is returned as an error.
func (c *Client) Export(ctx context.Context, td ptrace.Traces) error {
	resp, err := c.client.Export(ctx, ptraceotlp.NewExportRequestFromTraces(td), grpc.WaitForReady(true))
	if err != nil {
		return err
	}
	if ps := resp.PartialSuccess(); ps.RejectedSpans() > 0 {
		return fmt.Errorf("partial success: %d spans rejected: %s", ps.RejectedSpans(), ps.ErrorMessage())
	}
	return nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

// SendOptions control SendPData and SendSDK.
type SendOptions struct {
	// Endpoint is the loopback OTLP gRPC endpoint (default 127.0.0.1:4317).
	Endpoint string
	// Concurrency is the number of concurrent senders, each with its own
	// gRPC connection and shard of the workload (default 1).
	Concurrency int
	// SpansPerSecond limits the send rate over all senders (0 = unlimited).
	SpansPerSecond float64
	// RequestTimeout bounds each export request (default 10s).
	RequestTimeout time.Duration
}

func (o SendOptions) defaults() SendOptions {
	if o.Endpoint == "" {
		o.Endpoint = DefaultEndpoint
	}
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	return o
}

// SendResult summarises a send.
type SendResult struct {
	// Truth covers every trace at least part of which was sent.
	Truth *Truth
	// Traces is the number of traces in Truth; Spans the span records
	// acknowledged by the receiver; Requests the export calls made.
	Traces, Spans, Requests int
	Elapsed                 time.Duration
	// Stopped is true when ctx ended before the workload was exhausted.
	Stopped bool
}

// SpansPerSecond is Spans / Elapsed.
func (r SendResult) SpansPerSecond() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Spans) / r.Elapsed.Seconds()
}

// limiter spreads span sends evenly at a fixed rate across goroutines.
type limiter struct {
	mu   sync.Mutex
	per  time.Duration
	next time.Time
}

func newLimiter(spansPerSecond float64) *limiter {
	if spansPerSecond <= 0 {
		return nil
	}
	return &limiter{per: time.Duration(float64(time.Second) / spansPerSecond)}
}

func (l *limiter) wait(ctx context.Context, spans int) error {
	if l == nil {
		return ctx.Err()
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(time.Duration(spans) * l.per)
	l.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// SendPData sends the workload of g as interleaved ptrace.Traces batches over
// OTLP gRPC, with opts.Concurrency senders (each its own connection and
// shard). It stops when the workload is exhausted or ctx ends (then
// Stopped is set and no error is returned for the cancellation).
func SendPData(ctx context.Context, g *Generator, opts SendOptions) (SendResult, error) {
	opts = opts.defaults()
	lim := newLimiter(opts.SpansPerSecond)
	truth := &Truth{}
	var spans, reqs atomic.Int64
	var stopped atomic.Bool
	errs := make([]error, opts.Concurrency)
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < opts.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := Dial(opts.Endpoint)
			if err != nil {
				errs[w] = err
				return
			}
			defer c.Close()
			b := g.Batches(w, opts.Concurrency)
			defer func() { truth.Merge(b.Truth()) }()
			for {
				td, ok := b.Next()
				if !ok {
					return
				}
				n := td.SpanCount()
				if err := lim.wait(ctx, n); err != nil {
					stopped.Store(true)
					return
				}
				rctx, cancel := context.WithTimeout(ctx, opts.RequestTimeout)
				err := c.Export(rctx, td)
				cancel()
				reqs.Add(1)
				if err != nil {
					if ended(ctx) {
						stopped.Store(true)
						return
					}
					errs[w] = fmt.Errorf("sender %d: export: %w", w, err)
					return
				}
				spans.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	truth.Sort()
	res := SendResult{
		Truth:    truth,
		Traces:   len(truth.Traces),
		Spans:    int(spans.Load()),
		Requests: int(reqs.Load()),
		Elapsed:  time.Since(start),
		Stopped:  stopped.Load(),
	}
	return res, errors.Join(errs...)
}

// ended reports whether ctx is done or its deadline has passed (a request
// context derived from ctx may expire a moment before ctx itself reports it).
func ended(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// SendTrace sends one whole trace (all its records) in a single request.
func (c *Client) SendTrace(ctx context.Context, g *Generator, tr *Trace) error {
	return c.Export(ctx, g.TraceBatch(tr))
}
