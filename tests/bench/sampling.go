package bench

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/encoding/protowire"
)

// The sampling rows: our processor deciding each trace in the engine, against the floor of a
// processor that holds serialized traces and drops 90 % of them undecoded.
//
// Policy of both: the benchmark policy of the collector-level tail-sampling pipelines (keep a
// trace with an error span, keep an inconsistent one, 10 % of the rest), ours in the default
// `consistent` mode: a trace is kept when the rightmost 56 bits of its trace ID are at or above
// the rejection threshold of 10 % (2^56 − round(0.1 · 2^56)). The sampling rows run on the
// pool without error spans (samplingPool): the throughput workload has no inconsistent trace,
// so with no error span either, both keep exactly the traces whose trace ID passes the
// threshold, and both drop ~90 % of the spans.

// samplingThreshold is the rejection threshold of 10 % in 56 bits (README "Consistent
// probability sampling"; the engine's Threshold::from_percentage(10)).
const samplingThreshold = uint64(0xe6_6666_6666_6666)

// keptByTraceID is the consistent-mode decision of 10 % by a trace ID (no ot=rv in the
// workload's tracestate).
func keptByTraceID(id [16]byte) bool {
	rv := binary.BigEndian.Uint64(id[8:16]) & (1<<56 - 1)
	return rv >= samplingThreshold
}

// samplingConfig is our processor's sampling section for the sampling rows (as the collector
// decodes the YAML of scripts/bench-tailsampling.sh's traceconsistency/sampling).
func samplingConfig() map[string]any {
	return map[string]any{
		"mode": "consistent",
		"rules": []any{
			map[string]any{"name": "errors", "when": map[string]any{"error": true}, "action": "keep"},
			map[string]any{"name": "findings", "when": map[string]any{"consistency": map[string]any{"status": "inconsistent"}}, "action": "keep"},
		},
		"default": map[string]any{"action": "probabilistic", "probabilistic": map[string]any{"percentage": 10}},
	}
}

// samplingSpansMetric is the processor's counter of spans decided by sampling.
const samplingSpansMetric = "otelcol_processor_traceconsistency_sampling_spans"

// droppedSpansMeter is a MeterProvider (no-op for every instrument) that sums what our
// processor adds to sampling_spans with decision=dropped: the spans sampling dropped, counted
// through the processor's own counter. The processor updates it on every release tick, right
// after the tick's decisions.
type droppedSpansMeter struct {
	metric.MeterProvider
	dropped atomic.Int64
}

func newDroppedSpansMeter() *droppedSpansMeter {
	return &droppedSpansMeter{MeterProvider: noop.NewMeterProvider()}
}

func (m *droppedSpansMeter) Meter(name string, opts ...metric.MeterOption) metric.Meter {
	return droppedMeter{Meter: m.MeterProvider.Meter(name, opts...), dropped: &m.dropped}
}

type droppedMeter struct {
	metric.Meter
	dropped *atomic.Int64
}

func (m droppedMeter) Int64Counter(name string, opts ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	c, err := m.Meter.Int64Counter(name, opts...)
	if err != nil || name != samplingSpansMetric {
		return c, err
	}
	return droppedCounter{Int64Counter: c, dropped: m.dropped}, nil
}

type droppedCounter struct {
	metric.Int64Counter
	dropped *atomic.Int64
}

func (c droppedCounter) Add(ctx context.Context, incr int64, opts ...metric.AddOption) {
	attrs := metric.NewAddConfig(opts).Attributes()
	if v, ok := attrs.Value(attribute.Key("decision")); ok && v.AsString() == "dropped" {
		c.dropped.Add(incr)
	}
	c.Int64Counter.Add(ctx, incr, opts...)
}

// drop90 is the floor of "hold the bytes, drop 90 % undecoded, decode the rest": it marshals
// each incoming batch to OTLP protobuf once and splits the bytes by trace at the wire level
// (each span's bytes, framed under copies of its resource's and scope's bytes, appended to its
// trace's buffer; no pdata is built), holds every trace's bytes on the Go heap until the trace
// has been quiet for wait (polled every tick: our quiet_period and release_tick), then drops
// the traces keptByTraceID refuses without decoding them (counted in dropped) and
// unmarshals the kept ones, concatenated into releases of up to releaseSpans spans, for the
// next consumer. It does no assembly, no checks and no indexing beyond the trace ID.
type drop90 struct {
	next       consumer.Traces
	wait, tick time.Duration
	dropped    atomic.Int64 // spans dropped undecoded

	mu     sync.Mutex
	traces map[[16]byte]*heldTrace
	queue  []quietMark // in arrival order; a mark is stale when its trace saw a later batch
	head   int
	// scratch of split (under mu)
	groups []traceGroup

	stop chan struct{}
	done chan struct{}
}

// releaseSpans bounds one release (the processor's default max_release_batch_spans).
const releaseSpans = 8192

type heldTrace struct {
	data  []byte // concatenated TracesData resource_spans fields
	spans int
	last  time.Time
}

type quietMark struct {
	id [16]byte
	at time.Time
}

type traceGroup struct {
	id    [16]byte
	spans [][]byte
	size  int // bytes of the framed spans
}

func newDrop90(wait time.Duration, next consumer.Traces) *drop90 {
	return &drop90{next: next, wait: wait, tick: max(wait/10, time.Millisecond), traces: map[[16]byte]*heldTrace{}}
}

func (d *drop90) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: false}
}

func (d *drop90) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	data, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		return err
	}
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.split(data, now)
}

// split walks TracesData{1: ResourceSpans{1: resource, 2: ScopeSpans{1: scope, 2: Span{1:
// trace_id, ...}, 3: schema_url}, 3: schema_url}} and appends, per trace and scope, one
// ResourceSpans holding the resource's other fields and one ScopeSpans with the scope's other
// fields and that trace's spans. The caller holds d.mu.
func (d *drop90) split(data []byte, now time.Time) error {
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
		if num != 1 || typ != protowire.BytesType {
			m := protowire.ConsumeFieldValue(num, typ, data)
			if m < 0 {
				return protowire.ParseError(m)
			}
			data = data[m:]
			continue
		}
		rs, m := protowire.ConsumeBytes(data)
		if m < 0 {
			return protowire.ParseError(m)
		}
		data = data[m:]
		if err := d.splitResource(rs, now); err != nil {
			return err
		}
	}
	return nil
}

// fields splits a message into its fields with number num (values) and the others (raw).
func fields(msg []byte, num protowire.Number, each func(v []byte) error) (others []byte, err error) {
	for len(msg) > 0 {
		f, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(f, typ, msg[n:])
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		if f == num && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(msg[n:])
			if err := each(v); err != nil {
				return nil, err
			}
		} else {
			others = append(others, msg[:n+m]...)
		}
		msg = msg[n+m:]
	}
	return others, nil
}

func (d *drop90) splitResource(rs []byte, now time.Time) error {
	var scopes [][]byte
	rsHead, err := fields(rs, 2, func(ss []byte) error { scopes = append(scopes, ss); return nil })
	if err != nil {
		return err
	}
	for _, ss := range scopes {
		d.groups = d.groups[:0]
		ssHead, err := fields(ss, 2, func(span []byte) error {
			id, err := spanTraceID(span)
			if err != nil {
				return err
			}
			g := d.group(id)
			g.spans = append(g.spans, span)
			g.size += protowire.SizeTag(2) + protowire.SizeBytes(len(span))
			return nil
		})
		if err != nil {
			return err
		}
		for i := range d.groups {
			g := &d.groups[i]
			ssLen := len(ssHead) + g.size
			rsLen := len(rsHead) + protowire.SizeTag(2) + protowire.SizeBytes(ssLen)
			t := d.traces[g.id]
			if t == nil {
				t = &heldTrace{}
				d.traces[g.id] = t
			}
			b := protowire.AppendTag(t.data, 1, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(rsLen))
			b = append(b, rsHead...)
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(ssLen))
			b = append(b, ssHead...)
			for _, span := range g.spans {
				b = protowire.AppendTag(b, 2, protowire.BytesType)
				b = protowire.AppendBytes(b, span)
			}
			t.data = b
			t.spans += len(g.spans)
			t.last = now
			d.queue = append(d.queue, quietMark{id: g.id, at: now})
			g.spans = g.spans[:0]
		}
	}
	return nil
}

func (d *drop90) group(id [16]byte) *traceGroup {
	for i := range d.groups {
		if d.groups[i].id == id {
			return &d.groups[i]
		}
	}
	if len(d.groups) < cap(d.groups) {
		d.groups = d.groups[:len(d.groups)+1]
		g := &d.groups[len(d.groups)-1]
		g.id, g.spans, g.size = id, g.spans[:0], 0
		return g
	}
	d.groups = append(d.groups, traceGroup{id: id})
	return &d.groups[len(d.groups)-1]
}

// spanTraceID reads field 1 (trace_id) of a Span.
func spanTraceID(span []byte) ([16]byte, error) {
	var id [16]byte
	for len(span) > 0 {
		f, typ, n := protowire.ConsumeTag(span)
		if n < 0 {
			return id, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(f, typ, span[n:])
		if m < 0 {
			return id, protowire.ParseError(m)
		}
		if f == 1 && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(span[n:])
			copy(id[:], v)
			return id, nil
		}
		span = span[n+m:]
	}
	return id, nil
}

func (d *drop90) Start(context.Context, component.Host) error {
	d.stop, d.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(d.done)
		t := time.NewTicker(d.tick)
		defer t.Stop()
		for {
			select {
			case <-d.stop:
				return
			case now := <-t.C:
				d.release(now.Add(-d.wait))
			}
		}
	}()
	return nil
}

// release decides every trace whose last batch arrived at or before cutoff: dropped ones are
// counted and forgotten, kept ones unmarshalled (concatenated) and passed on.
func (d *drop90) release(cutoff time.Time) {
	var kept []*heldTrace
	d.mu.Lock()
	for d.head < len(d.queue) && !d.queue[d.head].at.After(cutoff) {
		mk := d.queue[d.head]
		d.head++
		t := d.traces[mk.id]
		if t == nil || t.last.After(mk.at) {
			continue // released already, or a later mark of the trace follows
		}
		delete(d.traces, mk.id)
		if keptByTraceID(mk.id) {
			kept = append(kept, t)
			continue
		}
		d.dropped.Add(int64(t.spans))
	}
	if d.head > len(d.queue)/2 {
		d.queue = append(d.queue[:0], d.queue[d.head:]...)
		d.head = 0
	}
	d.mu.Unlock()
	var buf []byte
	flush := func() {
		if len(buf) == 0 {
			return
		}
		td, err := (&ptrace.ProtoUnmarshaler{}).UnmarshalTraces(buf)
		if err != nil {
			panic(err) // our own split of our own marshal output
		}
		_ = d.next.ConsumeTraces(context.Background(), td)
		buf = nil
	}
	spans := 0
	for _, t := range kept {
		buf = append(buf, t.data...)
		spans += t.spans
		if spans >= releaseSpans {
			flush()
			spans = 0
		}
	}
	flush()
}

func (d *drop90) Shutdown(context.Context) error {
	if d.stop == nil {
		return nil
	}
	close(d.stop)
	<-d.done
	d.release(time.Now().Add(time.Hour))
	return nil
}
