// Package tracegen is a deterministic (seeded) generator of realistic
// distributed traces for tests and benchmarks of the traceconsistency
// processor.
//
// A workload is a sequence of traces. Each trace is planned from the seed and
// its index alone: a root SERVER span in an entry service, CLIENT→SERVER hops
// across services (each service is its own resource on its own host),
// INTERNAL children, database CLIENT leaves, PRODUCER→CONSUMER pairs, about
// ten attributes per span and some events. Healthy traces satisfy every
// consistency rule (children inside their parent's interval, one root, unique
// ids, sampled everywhere). On request, every Nth trace is broken in one
// selectable way (see BrokenKind).
//
// The plans can be sent two ways:
//   - as ptrace.Traces batches (Generate, Generator.Batches), with the spans
//     of several traces interleaved so each trace arrives in several batches;
//     SendPData exports them over OTLP gRPC;
//   - through the real OpenTelemetry Go SDK (SendSDK): one TracerProvider per
//     service, spans started with their parent context, W3C trace context
//     injected/extracted across service hops, exported by otlptracegrpc.
//
// Either way the ground truth (Truth) says which trace and span ids were sent,
// how many span records, and which traces are broken and how.
package tracegen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Config describes a workload. The zero value of each field selects its
// default; see Defaults.
type Config struct {
	// Seed makes the workload reproducible: the same Config yields the same
	// trace ids, span ids, structure, attributes and timestamps (timestamps
	// only when BaseTime is set and LiveClock is false).
	Seed int64
	// Traces is the number of traces (default 100).
	Traces int
	// MinSpans and MaxSpans bound the planned spans per trace (defaults 5 and
	// 50; MinSpans must be at least 3). Duplicate kinds add one copy, and
	// missing_parent withholds one span.
	MinSpans, MaxSpans int
	// Services is the number of services (resources) to spread spans over
	// (default 6, at least 2, at most len(ServiceNames)).
	Services int
	// Attributes is the number of attributes per span (default 10).
	Attributes int
	// EventProbability is the chance that a span carries a log event
	// (default 0.25; negative means none). Error spans always carry an
	// "exception" event.
	EventProbability float64
	// ErrorProbability is the chance that a span has an error status
	// (default 0.05; negative means none).
	ErrorProbability float64
	// SpansPerBatch is the number of spans per ptrace.Traces batch
	// (default 100).
	SpansPerBatch int
	// Interleave is the number of traces whose spans are mixed while
	// batching (default 8; 1 sends traces one after the other).
	Interleave int
	// Broken lists the broken kinds to produce. With BrokenEvery = N, trace i
	// is broken iff i%N == N-1, and it gets kind Broken[(i/N)%len(Broken)].
	Broken []BrokenKind
	// BrokenEvery is the period of broken traces (default 10 when Broken is
	// set; 1 breaks every trace).
	BrokenEvery int
	// Skew is the shift of a skewed_child subtree (default +2s).
	Skew time.Duration
	// FutureOffset is how far in the future a future_timestamp span starts,
	// relative to the trace's anchor time (default 1h).
	FutureOffset time.Duration
	// BaseTime anchors the traces: every span of every trace ends at or
	// before it (a healthy trace's root ends within about 50ms before it; a
	// trace whose planned times would end after it, e.g. skewed_child's
	// shifted subtree, is moved back as a whole). Only the span of
	// future_timestamp lies after it, on purpose. Zero means Now() when New
	// is called.
	BaseTime time.Time
	// LiveClock anchors each trace at Now() when it is planned instead of
	// BaseTime (for long-running senders), so every trace ends before it is
	// sent. Ids and structure stay deterministic; timestamps do not.
	LiveClock bool
	// Now is the clock read for BaseTime (when zero) and by LiveClock;
	// nil means time.Now. Tests inject a clock here.
	Now func() time.Time
}

// Defaults returns cfg with every zero field set to its default.
func (cfg Config) Defaults() Config {
	if cfg.Traces == 0 {
		cfg.Traces = 100
	}
	if cfg.MinSpans == 0 {
		cfg.MinSpans = 5
	}
	if cfg.MaxSpans == 0 {
		cfg.MaxSpans = max(50, cfg.MinSpans)
	}
	if cfg.Services == 0 {
		cfg.Services = 6
	}
	if cfg.Attributes == 0 {
		cfg.Attributes = 10
	}
	if cfg.EventProbability == 0 {
		cfg.EventProbability = 0.25
	}
	if cfg.ErrorProbability == 0 {
		cfg.ErrorProbability = 0.05
	}
	if cfg.SpansPerBatch == 0 {
		cfg.SpansPerBatch = 100
	}
	if cfg.Interleave == 0 {
		cfg.Interleave = 8
	}
	if cfg.BrokenEvery == 0 && len(cfg.Broken) > 0 {
		cfg.BrokenEvery = 10
	}
	if cfg.Skew == 0 {
		cfg.Skew = 2 * time.Second
	}
	if cfg.FutureOffset == 0 {
		cfg.FutureOffset = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return cfg
}

// Validate reports the first invalid field of a defaulted config.
func (cfg Config) Validate() error {
	var errs []error
	if cfg.Traces < 0 {
		errs = append(errs, fmt.Errorf("Traces must be >= 0, got %d", cfg.Traces))
	}
	if cfg.MinSpans < 3 {
		errs = append(errs, fmt.Errorf("MinSpans must be >= 3, got %d", cfg.MinSpans))
	}
	if cfg.MaxSpans < cfg.MinSpans {
		errs = append(errs, fmt.Errorf("MaxSpans (%d) must be >= MinSpans (%d)", cfg.MaxSpans, cfg.MinSpans))
	}
	if cfg.Services < 2 || cfg.Services > len(ServiceNames) {
		errs = append(errs, fmt.Errorf("Services must be in [2, %d], got %d", len(ServiceNames), cfg.Services))
	}
	if cfg.Attributes < 0 {
		errs = append(errs, fmt.Errorf("Attributes must be >= 0, got %d", cfg.Attributes))
	}
	if cfg.SpansPerBatch < 1 {
		errs = append(errs, fmt.Errorf("SpansPerBatch must be >= 1, got %d", cfg.SpansPerBatch))
	}
	if cfg.Interleave < 1 {
		errs = append(errs, fmt.Errorf("Interleave must be >= 1, got %d", cfg.Interleave))
	}
	if cfg.BrokenEvery < 0 {
		errs = append(errs, fmt.Errorf("BrokenEvery must be >= 0, got %d", cfg.BrokenEvery))
	}
	for _, k := range cfg.Broken {
		if !k.Valid() {
			errs = append(errs, fmt.Errorf("unknown broken kind %q", k))
		}
	}
	return errors.Join(errs...)
}

// ServiceNames are the service.name values, in order; Config.Services takes
// the first N.
var ServiceNames = []string{
	"frontend", "checkout", "cart", "product-catalog", "payment", "shipping",
	"currency", "recommendation", "email", "ad", "quote", "fraud-detection",
}

// Service is one resource: a service instance on its own host.
type Service struct {
	Index      int
	Name       string
	Namespace  string
	Version    string
	InstanceID string
	HostName   string
	HostID     string
	// Resource is the full resource attribute list, in order.
	Resource []Attr
}

// Attr is a string or int attribute.
type Attr struct {
	Key   string
	Str   string
	Int   int64
	IsInt bool
}

// Event is a span event.
type Event struct {
	Name  string
	Time  time.Time
	Attrs []Attr
}

// Span is one planned span.
type Span struct {
	TraceID      pcommon.TraceID
	SpanID       pcommon.SpanID
	ParentSpanID pcommon.SpanID // empty for a root
	Service      int
	Name         string
	Kind         ptrace.SpanKind
	Start, End   time.Time
	// Flags is the OTLP Span.flags word: W3C flags in bits 0-7 (0x01
	// sampled), 0x100 = "is_remote known", 0x200 = parent is remote.
	Flags        uint32
	RemoteParent bool
	Attrs        []Attr
	Events       []Event
	Error        bool
	StatusMsg    string
	// Send is false for the span withheld by missing_parent: the SDK
	// starts it (its children need its context) but never ends it.
	Send bool
	// Copy marks the second record of duplicate_span / conflicting_duplicate.
	Copy bool

	Parent   *Span
	Children []*Span
}

// Key returns the (trace id, span id) key of the span.
func (s *Span) Key() SpanKey { return SpanKey{TraceID: s.TraceID, SpanID: s.SpanID} }

// Trace is one planned trace.
type Trace struct {
	Index   int
	TraceID pcommon.TraceID
	Broken  BrokenKind
	// Roots are the spans without a parent (two for two_roots).
	Roots []*Span
	// Spans lists every planned span, parents before children, including
	// the withheld span and duplicate copies.
	Spans []*Span
	// Emit lists the span records to send, in the order an SDK would export
	// them (by end time); duplicate copies come last.
	Emit  []*Span
	Truth TraceTruth
}

// Generator plans the traces of one workload.
type Generator struct {
	cfg      Config
	base     time.Time
	services []Service
}

// New validates and defaults cfg and returns its generator.
func New(cfg Config) (*Generator, error) {
	cfg = cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tracegen: invalid config: %w", err)
	}
	g := &Generator{cfg: cfg, base: cfg.BaseTime}
	if g.base.IsZero() {
		g.base = cfg.Now()
	}
	r := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x5e41ce5))
	for i := 0; i < cfg.Services; i++ {
		g.services = append(g.services, newService(r, i))
	}
	return g, nil
}

// MustNew is New that panics on an invalid config.
func MustNew(cfg Config) *Generator {
	g, err := New(cfg)
	if err != nil {
		panic(err)
	}
	return g
}

// Config returns the defaulted config.
func (g *Generator) Config() Config { return g.cfg }

// BaseTime returns the anchor time of the traces (when LiveClock is false).
func (g *Generator) BaseTime() time.Time { return g.base }

// Services returns the services (resources) of the workload.
func (g *Generator) Services() []Service { return g.services }

// BrokenKindOf returns the broken kind planned for trace i ("" if healthy).
func (g *Generator) BrokenKindOf(i int) BrokenKind {
	n := g.cfg.BrokenEvery
	if n <= 0 || len(g.cfg.Broken) == 0 {
		return ""
	}
	if i%n != n-1 {
		return ""
	}
	return g.cfg.Broken[(i/n)%len(g.cfg.Broken)]
}

func newService(r *rand.Rand, i int) Service {
	name := ServiceNames[i]
	var inst [16]byte
	fillNonZero(r, inst[:])
	inst[6] = (inst[6] & 0x0f) | 0x40 // UUID v4 shape
	inst[8] = (inst[8] & 0x3f) | 0x80
	instanceID := fmt.Sprintf("%x-%x-%x-%x-%x", inst[0:4], inst[4:6], inst[6:8], inst[8:10], inst[10:16])
	var hid [16]byte
	fillNonZero(r, hid[:])
	s := Service{
		Index:      i,
		Name:       name,
		Namespace:  "shop",
		Version:    fmt.Sprintf("1.%d.%d", r.IntN(10), r.IntN(30)),
		InstanceID: instanceID,
		HostName:   fmt.Sprintf("node-%02d.shop.internal", i+1),
		HostID:     fmt.Sprintf("%x", hid[:]),
	}
	s.Resource = []Attr{
		str("service.name", s.Name),
		str("service.namespace", s.Namespace),
		str("service.version", s.Version),
		str("service.instance.id", s.InstanceID),
		str("host.name", s.HostName),
		str("host.id", s.HostID),
		str("host.arch", "amd64"),
		str("os.type", "linux"),
		str("deployment.environment.name", "test"),
		str("telemetry.sdk.language", "go"),
		str("telemetry.sdk.name", "opentelemetry"),
		str("telemetry.sdk.version", "1.47.0"),
	}
	return s
}

func fillNonZero(r *rand.Rand, b []byte) {
	for {
		for i := 0; i < len(b); i += 8 {
			var w [8]byte
			binary.LittleEndian.PutUint64(w[:], r.Uint64())
			copy(b[i:], w[:])
		}
		for _, x := range b {
			if x != 0 {
				return
			}
		}
	}
}

func (g *Generator) traceRand(i int) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(g.cfg.Seed), 0x9e3779b97f4a7c15^uint64(i)))
}

const (
	flagSampled     = 0x01
	flagRemoteKnown = 0x100
	flagRemote      = 0x200
)

type planner struct {
	g     *Generator
	r     *rand.Rand
	tr    *Trace
	ids   map[pcommon.SpanID]bool
	route string
}

// Plan returns the plan of trace i (0 <= i). It is a pure function of the
// config and i (plus the clock when LiveClock is set or BaseTime zero).
// Every planned span ends at or before the trace's anchor (BaseTime, or
// Now() at the call with LiveClock), except the span of future_timestamp.
func (g *Generator) Plan(i int) *Trace {
	r := g.traceRand(i)
	p := &planner{g: g, r: r, tr: &Trace{Index: i}, ids: map[pcommon.SpanID]bool{}}
	var tid [16]byte
	fillNonZero(r, tid[:])
	p.tr.TraceID = tid

	cfg := g.cfg
	n := cfg.MinSpans + r.IntN(cfg.MaxSpans-cfg.MinSpans+1)
	anchor := g.base
	if cfg.LiveClock {
		anchor = cfg.Now()
	}
	end := anchor.Add(-time.Duration(r.Int64N(int64(50 * time.Millisecond))))
	dur := 20*time.Millisecond + time.Duration(r.Int64N(int64(980*time.Millisecond)))
	entry := r.IntN(2)
	p.route = routes[r.IntN(len(routes))]
	root := p.newSpan(nil, entry, ptrace.SpanKindServer, "GET "+p.route, end.Add(-dur), end)
	root.Attrs = p.attrs(root, httpServerAttrs(r, p.route, g.services[entry]))

	first := true
	for len(p.tr.Spans) < n {
		remaining := n - len(p.tr.Spans)
		parent := p.pickParent()
		action := 0
		if first && remaining >= 2 {
			action = 0
		} else {
			x := r.IntN(100)
			switch {
			case remaining >= 2 && x < 35:
				action = 0 // hop
			case remaining >= 2 && x < 48:
				action = 1 // messaging
			case x < 74:
				action = 2 // internal
			default:
				action = 3 // db
			}
		}
		first = false
		switch action {
		case 0:
			p.hop(parent)
		case 1:
			p.messaging(parent)
		case 2:
			p.internal(parent)
		case 3:
			p.db(parent)
		}
	}

	p.tr.Broken = g.BrokenKindOf(i)
	affected, missing := p.breakTrace(anchor)
	if p.tr.Broken != FutureTimestamp {
		p.endBy(anchor)
	}

	// Roots and emission order.
	for _, s := range p.tr.Spans {
		if s.Parent == nil {
			p.tr.Roots = append(p.tr.Roots, s)
		}
	}
	var emit, copies []*Span
	for _, s := range p.tr.Spans {
		switch {
		case !s.Send:
		case s.Copy:
			copies = append(copies, s)
		default:
			emit = append(emit, s)
		}
	}
	sortByEnd(emit)
	p.tr.Emit = append(emit, copies...)

	// Ground truth.
	t := TraceTruth{
		Index:           i,
		TraceID:         p.tr.TraceID,
		Broken:          p.tr.Broken,
		RootSpanID:      root.SpanID,
		Records:         len(p.tr.Emit),
		Affected:        affected,
		MissingParentID: missing,
		PDataOnly:       p.tr.Broken.PDataOnly(),
	}
	seenKey := map[SpanKey]bool{}
	seenSvc := map[int]bool{}
	for _, s := range p.tr.Emit {
		if !seenKey[s.Key()] {
			seenKey[s.Key()] = true
			t.Spans = append(t.Spans, s.Key())
		}
		if !seenSvc[s.Service] {
			seenSvc[s.Service] = true
			t.Services = append(t.Services, g.services[s.Service].Name)
		}
	}
	p.tr.Truth = t
	return p.tr
}

// endBy moves the whole trace back in time, if needed, so that no span ends
// after t. Only a broken kind that shifts spans forward (skewed_child with a
// positive Config.Skew) can need it; the relative times, and so the skew
// between a child and its parent, are kept. A trace must end before it is
// sent: a span end ahead of the receiver's clock is a future_timestamp
// finding of its own.
func (p *planner) endBy(t time.Time) {
	var latest time.Time
	for _, s := range p.tr.Spans {
		if s.End.After(latest) {
			latest = s.End
		}
	}
	if !latest.After(t) {
		return
	}
	d := t.Sub(latest)
	for _, s := range p.tr.Spans {
		s.Start = s.Start.Add(d)
		s.End = s.End.Add(d)
		for i := range s.Events {
			s.Events[i].Time = s.Events[i].Time.Add(d)
		}
	}
}

func sortByEnd(s []*Span) {
	// insertion sort keeps it stable and allocation-free; traces are small
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].End.Before(s[j-1].End); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func (p *planner) newSpanID() pcommon.SpanID {
	for {
		var id [8]byte
		fillNonZero(p.r, id[:])
		if !p.ids[id] {
			p.ids[id] = true
			return id
		}
	}
}

func (p *planner) newSpan(parent *Span, svc int, kind ptrace.SpanKind, name string, start, end time.Time) *Span {
	s := &Span{
		TraceID: p.tr.TraceID,
		SpanID:  p.newSpanID(),
		Service: svc,
		Name:    name,
		Kind:    kind,
		Start:   start,
		End:     end,
		Flags:   flagSampled | flagRemoteKnown,
		Send:    true,
		Parent:  parent,
	}
	if parent != nil {
		s.ParentSpanID = parent.SpanID
		parent.Children = append(parent.Children, s)
		if parent.Service != svc {
			s.RemoteParent = true
			s.Flags |= flagRemote
		}
	}
	p.tr.Spans = append(p.tr.Spans, s)
	return s
}

// addEvents decorates s with status and events; called once attributes exist.
func (p *planner) decorate(s *Span) {
	r := p.r
	d := s.End.Sub(s.Start)
	at := func() time.Time { return s.Start.Add(time.Duration(r.Int64N(int64(d) + 1))) }
	if p.g.cfg.ErrorProbability > 0 && r.Float64() < p.g.cfg.ErrorProbability {
		s.Error = true
		et := exceptionTypes[r.IntN(len(exceptionTypes))]
		s.StatusMsg = et.msg
		s.Events = append(s.Events, Event{Name: "exception", Time: at(), Attrs: []Attr{
			str("exception.type", et.typ),
			str("exception.message", et.msg),
			str("exception.stacktrace", fmt.Sprintf("%s\n\tat %s.handle(%s.go:%d)", et.typ, p.g.services[s.Service].Name, s.Name, 10+r.IntN(400))),
		}})
	}
	if p.g.cfg.EventProbability > 0 && r.Float64() < p.g.cfg.EventProbability {
		ev := eventNames[r.IntN(len(eventNames))]
		s.Events = append(s.Events, Event{Name: ev, Time: at(), Attrs: []Attr{
			str("event.detail", words[r.IntN(len(words))]),
			integer("event.sequence", int64(r.IntN(1000))),
		}})
	}
	sortEvents(s.Events)
}

func sortEvents(ev []Event) {
	for i := 1; i < len(ev); i++ {
		for j := i; j > 0 && ev[j].Time.Before(ev[j-1].Time); j-- {
			ev[j], ev[j-1] = ev[j-1], ev[j]
		}
	}
}

// pickParent chooses a span that may have children: SERVER, CONSUMER or
// INTERNAL, long enough to nest more spans.
func (p *planner) pickParent() *Span {
	var cands []*Span
	for _, s := range p.tr.Spans {
		switch s.Kind {
		case ptrace.SpanKindServer, ptrace.SpanKindConsumer, ptrace.SpanKindInternal:
			if s.End.Sub(s.Start) >= 200*time.Microsecond {
				cands = append(cands, s)
			}
		}
	}
	if len(cands) == 0 {
		return p.tr.Spans[0]
	}
	return cands[p.r.IntN(len(cands))]
}

// childInterval returns a random interval inside parent's.
func (p *planner) childInterval(parent *Span) (time.Time, time.Time) {
	d := parent.End.Sub(parent.Start)
	off := time.Duration(p.r.Float64() * 0.6 * float64(d))
	start := parent.Start.Add(off)
	rest := parent.End.Sub(start)
	dur := time.Duration((0.1 + 0.8*p.r.Float64()) * float64(rest))
	if dur < time.Microsecond {
		dur = min(time.Microsecond, rest)
	}
	return start, start.Add(dur)
}

func (p *planner) otherService(svc int) int {
	n := p.g.cfg.Services
	t := p.r.IntN(n - 1)
	if t >= svc {
		t++
	}
	return t
}

func (p *planner) hop(parent *Span) {
	r := p.r
	target := p.otherService(parent.Service)
	tsvc := p.g.services[target]
	cs, ce := p.childInterval(parent)
	method := rpcMethods[r.IntN(len(rpcMethods))]
	rpcService := "shop." + camel(tsvc.Name) + "Service"
	client := p.newSpan(parent, parent.Service, ptrace.SpanKindClient, rpcService+"/"+method, cs, ce)
	client.Attrs = p.attrs(client, rpcClientAttrs(r, rpcService, method, tsvc))
	p.decorate(client)
	lat := time.Duration((0.02 + 0.08*r.Float64()) * float64(ce.Sub(cs)))
	server := p.newSpan(client, target, ptrace.SpanKindServer, rpcService+"/"+method, cs.Add(lat), ce.Add(-lat))
	server.Attrs = p.attrs(server, rpcServerAttrs(r, rpcService, method, p.g.services[parent.Service]))
	p.decorate(server)
}

func (p *planner) messaging(parent *Span) {
	r := p.r
	target := p.otherService(parent.Service)
	topic := topics[r.IntN(len(topics))]
	ps, pe := p.childInterval(parent)
	prod := p.newSpan(parent, parent.Service, ptrace.SpanKindProducer, "send "+topic, ps, pe)
	msgID := fmt.Sprintf("%016x", r.Uint64())
	prod.Attrs = p.attrs(prod, messagingAttrs(r, topic, "send", msgID))
	p.decorate(prod)
	lat := time.Duration((0.05 + 0.1*r.Float64()) * float64(pe.Sub(ps)))
	cons := p.newSpan(prod, target, ptrace.SpanKindConsumer, "process "+topic, ps.Add(lat), pe.Add(-lat))
	cons.Attrs = p.attrs(cons, messagingAttrs(r, topic, "process", msgID))
	p.decorate(cons)
}

func (p *planner) internal(parent *Span) {
	r := p.r
	s, e := p.childInterval(parent)
	fn := internalOps[r.IntN(len(internalOps))]
	sp := p.newSpan(parent, parent.Service, ptrace.SpanKindInternal, fn, s, e)
	sp.Attrs = p.attrs(sp, internalAttrs(r, fn))
	p.decorate(sp)
}

func (p *planner) db(parent *Span) {
	r := p.r
	s, e := p.childInterval(parent)
	q := dbQueries[r.IntN(len(dbQueries))]
	sp := p.newSpan(parent, parent.Service, ptrace.SpanKindClient, q.op+" "+q.table, s, e)
	sp.Attrs = p.attrs(sp, dbAttrs(r, q))
	p.decorate(sp)
}

// attrs pads/truncates base to the configured attribute count.
func (p *planner) attrs(s *Span, base []Attr) []Attr {
	n := p.g.cfg.Attributes
	if len(base) > n {
		return base[:n]
	}
	for i := 0; len(base) < n; i++ {
		base = append(base, padAttr(p.r, i))
	}
	return base
}

func (p *planner) spansWhere(f func(s *Span) bool) []*Span {
	var out []*Span
	for _, s := range p.tr.Spans {
		if f(s) {
			out = append(out, s)
		}
	}
	return out
}

func (p *planner) pick(cands []*Span, fallback func(s *Span) bool) *Span {
	if len(cands) == 0 {
		cands = p.spansWhere(fallback)
	}
	return cands[p.r.IntN(len(cands))]
}

func nonRoot(s *Span) bool { return s.Parent != nil }

func isLeaf(s *Span) bool { return s.Parent != nil && len(s.Children) == 0 }

func shiftSubtree(s *Span, d time.Duration) {
	s.Start = s.Start.Add(d)
	s.End = s.End.Add(d)
	for i := range s.Events {
		s.Events[i].Time = s.Events[i].Time.Add(d)
	}
	for _, c := range s.Children {
		shiftSubtree(c, d)
	}
}

func (p *planner) duplicate(s *Span) *Span {
	c := *s
	c.Attrs = append([]Attr(nil), s.Attrs...)
	c.Events = append([]Event(nil), s.Events...)
	c.Children = nil
	c.Copy = true
	s.Parent.Children = append(s.Parent.Children, &c)
	p.tr.Spans = append(p.tr.Spans, &c)
	return &c
}

// breakTrace applies the trace's broken kind. It returns the key of the
// affected span and, for missing_parent, the withheld span id.
func (p *planner) breakTrace(anchor time.Time) (SpanKey, pcommon.SpanID) {
	var none pcommon.SpanID
	switch p.tr.Broken {
	case "":
		return SpanKey{}, none
	case MissingParent:
		m := p.pick(p.spansWhere(func(s *Span) bool { return s.Parent != nil && len(s.Children) > 0 }), nonRoot)
		m.Send = false
		if len(m.Children) == 0 { // cannot happen with MinSpans >= 3, kept for safety
			return m.Key(), m.SpanID
		}
		return m.Children[0].Key(), m.SpanID
	case TwoRoots:
		s := p.pick(p.spansWhere(func(s *Span) bool { return s.Parent != nil && s.RemoteParent && s.Kind == ptrace.SpanKindServer }), nonRoot)
		par := s.Parent
		for i, c := range par.Children {
			if c == s {
				par.Children = append(par.Children[:i:i], par.Children[i+1:]...)
				break
			}
		}
		s.Parent = nil
		s.ParentSpanID = pcommon.NewSpanIDEmpty()
		s.RemoteParent = false
		s.Flags = flagSampled | flagRemoteKnown
		return s.Key(), none
	case DuplicateSpan:
		s := p.pick(p.spansWhere(isLeaf), nonRoot)
		p.duplicate(s)
		return s.Key(), none
	case ConflictingDuplicate:
		s := p.pick(p.spansWhere(isLeaf), nonRoot)
		c := p.duplicate(s)
		c.End = c.Start.Add(c.End.Sub(c.Start) / 2)
		c.Attrs = append(c.Attrs, str("app.conflict", "second-version"))
		if len(c.Attrs) > 1 {
			c.Attrs = c.Attrs[1:] // keep the attribute count, change content
		}
		return s.Key(), none
	case SkewedChild:
		s := p.pick(p.spansWhere(func(s *Span) bool { return s.Parent != nil && s.RemoteParent && s.Kind == ptrace.SpanKindServer }), nonRoot)
		shiftSubtree(s, p.g.cfg.Skew)
		return s.Key(), none
	case SampledMismatch:
		s := p.pick(p.spansWhere(func(s *Span) bool { return s.Parent != nil && !s.RemoteParent }), nonRoot)
		s.Flags &^= flagSampled
		return s.Key(), none
	case FutureTimestamp:
		s := p.pick(p.spansWhere(isLeaf), nonRoot)
		shiftSubtree(s, anchor.Add(p.g.cfg.FutureOffset).Sub(s.Start))
		return s.Key(), none
	case ZeroTraceID:
		s := p.pick(p.spansWhere(isLeaf), nonRoot)
		s.TraceID = pcommon.NewTraceIDEmpty()
		return s.Key(), none
	case ZeroSpanID:
		s := p.pick(p.spansWhere(isLeaf), nonRoot)
		s.SpanID = pcommon.NewSpanIDEmpty()
		return s.Key(), none
	}
	return SpanKey{}, none
}
