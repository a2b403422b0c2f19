package tracegen

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// plannedIDs carries the ids the next span must get; plannedIDGenerator
// hands them to the SDK so SDK spans carry the planned (ground-truth) ids.
type plannedIDs struct {
	traceID trace.TraceID
	spanID  trace.SpanID
}

type plannedKey struct{}

type plannedIDGenerator struct{}

func (plannedIDGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if p, ok := ctx.Value(plannedKey{}).(plannedIDs); ok {
		return p.traceID, p.spanID
	}
	var t trace.TraceID
	var s trace.SpanID
	_, _ = crand.Read(t[:])
	_, _ = crand.Read(s[:])
	return t, s
}

func (plannedIDGenerator) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	if p, ok := ctx.Value(plannedKey{}).(plannedIDs); ok {
		return p.spanID
	}
	var s trace.SpanID
	_, _ = crand.Read(s[:])
	return s
}

// countingExporter counts spans acknowledged and export errors.
type countingExporter struct {
	sdktrace.SpanExporter
	spans, requests, failures atomic.Int64
	mu                        sync.Mutex
	lastErr                   error
}

func (c *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := c.SpanExporter.ExportSpans(ctx, spans)
	c.requests.Add(1)
	if err != nil {
		c.failures.Add(1)
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		return err
	}
	c.spans.Add(int64(len(spans)))
	return nil
}

func toAttrs(as []Attr) []attribute.KeyValue {
	kv := make([]attribute.KeyValue, len(as))
	for i, a := range as {
		if a.IsInt {
			kv[i] = attribute.Int64(a.Key, a.Int)
		} else {
			kv[i] = attribute.String(a.Key, a.Str)
		}
	}
	return kv
}

func sdkKind(k ptrace.SpanKind) trace.SpanKind {
	switch k {
	case ptrace.SpanKindServer:
		return trace.SpanKindServer
	case ptrace.SpanKindClient:
		return trace.SpanKindClient
	case ptrace.SpanKindProducer:
		return trace.SpanKindProducer
	case ptrace.SpanKindConsumer:
		return trace.SpanKindConsumer
	}
	return trace.SpanKindInternal
}

// SDKSender sends planned traces through the OpenTelemetry Go SDK: one
// TracerProvider (resource, batch span processor, otlptracegrpc exporter)
// per service.
type SDKSender struct {
	g         *Generator
	providers []*sdktrace.TracerProvider
	tracers   []trace.Tracer
	exporters []*countingExporter
	prop      propagation.TextMapPropagator
	pdata     *Client
}

// NewSDKSender builds the per-service tracer providers for g, exporting to a
// loopback endpoint. Call Shutdown to flush and close them.
func NewSDKSender(ctx context.Context, g *Generator, endpoint string) (*SDKSender, error) {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	if err := CheckLoopback(endpoint); err != nil {
		return nil, err
	}
	s := &SDKSender{g: g, prop: propagation.TraceContext{}}
	for _, svc := range g.services {
		exp, err := otlptracegrpc.New(ctx,
			otlptracegrpc.WithEndpoint(endpoint),
			otlptracegrpc.WithInsecure(),
			otlptracegrpc.WithTimeout(10*time.Second),
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{
				Enabled: true, InitialInterval: 100 * time.Millisecond,
				MaxInterval: time.Second, MaxElapsedTime: 15 * time.Second,
			}))
		if err != nil {
			_ = s.Shutdown(ctx)
			return nil, fmt.Errorf("otlptracegrpc exporter for %s: %w", svc.Name, err)
		}
		ce := &countingExporter{SpanExporter: exp}
		res := resource.NewSchemaless(toAttrs(svc.Resource)...)
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.AlwaysSample()),
			sdktrace.WithIDGenerator(plannedIDGenerator{}),
			sdktrace.WithSpanLimits(sdktrace.SpanLimits{
				AttributeValueLengthLimit: -1, AttributeCountLimit: 128,
				EventCountLimit: 128, LinkCountLimit: 128,
				AttributePerEventCountLimit: 128, AttributePerLinkCountLimit: 128,
			}),
			sdktrace.WithBatcher(ce,
				sdktrace.WithBlocking(),
				sdktrace.WithBatchTimeout(100*time.Millisecond),
				sdktrace.WithMaxExportBatchSize(512),
				sdktrace.WithMaxQueueSize(8192)),
		)
		s.providers = append(s.providers, tp)
		s.exporters = append(s.exporters, ce)
		s.tracers = append(s.tracers, tp.Tracer(ScopeName, trace.WithInstrumentationVersion(ScopeVersion)))
	}
	c, err := Dial(endpoint)
	if err != nil {
		_ = s.Shutdown(ctx)
		return nil, err
	}
	s.pdata = c
	return s, nil
}

// Send emits one planned trace. Traces of a kind the SDK cannot produce
// (BrokenKind.PDataOnly) are exported with pdata in one request; the others
// go through the SDK with real context propagation: same-service children
// start from their parent's context, and across services (CLIENT→SERVER,
// PRODUCER→CONSUMER) the W3C traceparent is injected into a carrier and
// extracted on the other side, so the child has a remote parent. The span
// withheld by missing_parent is started but never ended, so the SDK never
// exports it. Spans leave via the batch span processors: call Flush (or
// Shutdown) to be sure they were sent.
func (s *SDKSender) Send(ctx context.Context, tr *Trace) error {
	if tr.Broken.PDataOnly() {
		return s.pdata.SendTrace(ctx, s.g, tr)
	}
	for _, root := range tr.Roots {
		s.emit(context.Background(), root, true)
	}
	return nil
}

func (s *SDKSender) emit(parentCtx context.Context, sp *Span, root bool) {
	ctx := parentCtx
	if !root && sp.RemoteParent {
		carrier := propagation.MapCarrier{}
		s.prop.Inject(parentCtx, carrier)
		ctx = s.prop.Extract(context.Background(), carrier)
	}
	ctx = context.WithValue(ctx, plannedKey{}, plannedIDs{traceID: trace.TraceID(sp.TraceID), spanID: trace.SpanID(sp.SpanID)})
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(sdkKind(sp.Kind)),
		trace.WithTimestamp(sp.Start),
		trace.WithAttributes(toAttrs(sp.Attrs)...),
	}
	if root {
		opts = append(opts, trace.WithNewRoot())
	}
	cctx, span := s.tracers[sp.Service].Start(ctx, sp.Name, opts...)
	for _, ev := range sp.Events {
		span.AddEvent(ev.Name, trace.WithTimestamp(ev.Time), trace.WithAttributes(toAttrs(ev.Attrs)...))
	}
	if sp.Error {
		span.SetStatus(codes.Error, sp.StatusMsg)
	}
	for _, c := range sp.Children {
		s.emit(cctx, c, false)
	}
	if sp.Send {
		span.End(trace.WithTimestamp(sp.End))
	}
}

// Flush forces every provider to export what it has buffered.
func (s *SDKSender) Flush(ctx context.Context) error {
	var errs []error
	for _, tp := range s.providers {
		if err := tp.ForceFlush(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(append(errs, s.exportErr())...)
}

func (s *SDKSender) exportErr() error {
	var errs []error
	for i, e := range s.exporters {
		if f := e.failures.Load(); f > 0 {
			e.mu.Lock()
			errs = append(errs, fmt.Errorf("%s: %d failed exports, last: %w", s.g.services[i].Name, f, e.lastErr))
			e.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// ExportedSpans returns the number of span records the SDK exporters had
// acknowledged, and the number of export requests they made.
func (s *SDKSender) ExportedSpans() (spans, requests int) {
	for _, e := range s.exporters {
		spans += int(e.spans.Load())
		requests += int(e.requests.Load())
	}
	return spans, requests
}

// Shutdown flushes and closes every provider and the pdata connection.
func (s *SDKSender) Shutdown(ctx context.Context) error {
	var errs []error
	for _, tp := range s.providers {
		if err := tp.Shutdown(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.pdata != nil {
		if err := s.pdata.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(append(errs, s.exportErr())...)
}

// SendSDK sends the whole workload of g through the SDK (see SDKSender.Send)
// with opts.Concurrency goroutines (each a shard of the traces), then flushes
// and shuts the providers down. It stops early when ctx ends (Stopped).
// Result.Spans counts records acknowledged by the receiver: those exported
// by the SDK plus those sent with pdata.
func SendSDK(ctx context.Context, g *Generator, opts SendOptions) (SendResult, error) {
	opts = opts.defaults()
	start := time.Now()
	s, err := NewSDKSender(ctx, g, opts.Endpoint)
	if err != nil {
		return SendResult{}, err
	}
	lim := newLimiter(opts.SpansPerSecond)
	truth := &Truth{}
	var pdataSpans, pdataReqs atomic.Int64
	var stopped atomic.Bool
	errs := make([]error, opts.Concurrency)
	var wg sync.WaitGroup
	for w := 0; w < opts.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < g.cfg.Traces; i += opts.Concurrency {
				tr := g.Plan(i)
				if err := lim.wait(ctx, len(tr.Emit)); err != nil {
					stopped.Store(true)
					return
				}
				rctx, cancel := context.WithTimeout(ctx, opts.RequestTimeout)
				err := s.Send(rctx, tr)
				cancel()
				if err != nil {
					if ended(ctx) {
						stopped.Store(true)
						return
					}
					errs[w] = fmt.Errorf("trace %d: %w", i, err)
					return
				}
				if tr.Broken.PDataOnly() {
					pdataSpans.Add(int64(len(tr.Emit)))
					pdataReqs.Add(1)
				}
				truth.Add(tr.Truth)
			}
		}()
	}
	wg.Wait()
	// Flush/shutdown get their own bound so a cancelled ctx still flushes.
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shutErr := s.Shutdown(sctx)
	sdkSpans, sdkReqs := s.ExportedSpans()
	truth.Sort()
	res := SendResult{
		Truth:    truth,
		Traces:   len(truth.Traces),
		Spans:    sdkSpans + int(pdataSpans.Load()),
		Requests: sdkReqs + int(pdataReqs.Load()),
		Elapsed:  time.Since(start),
		Stopped:  stopped.Load(),
	}
	return res, errors.Join(append(errs, shutErr)...)
}
