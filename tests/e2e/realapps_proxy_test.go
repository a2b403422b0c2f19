package e2e

// The OTLP pass-through of the real-application harness: every service exports OTLP/HTTP
// protobuf to it; it records what each service really exported (the ground truth, with the
// arrival time of each span), applies the scenario's faults, and forwards the requests to the
// collector over OTLP gRPC, answering the SDK with the collector's answer.

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// faultKind is an anomaly the proxy injects into the traces it selects.
type faultKind string

const (
	faultNone faultKind = ""
	// faultDropParent drops the Java service's SERVER spans (a parent dropped by an exporter):
	// its children in the Java process reference a parent that never arrives.
	faultDropParent faultKind = "drop_parent"
	// faultDuplicate sends the Go service's spans of the trace a second time, unchanged, in a
	// request of their own right after the original (a retry of an acknowledged export).
	faultDuplicate faultKind = "duplicate_retry"
	// faultConflict sends the Go service's spans again with one attribute added (a retry whose
	// content changed): two different spans with one span ID.
	faultConflict faultKind = "conflicting_retry"
	// faultFlagFlip clears the W3C sampled bit in the trace-flags byte of the Java service's
	// spans (bits 8-9, parent-is-remote, are kept): the sampled flag flips between services.
	faultFlagFlip faultKind = "sampled_flag_flip"
	// faultTwoRoots clears the parent span ID of the Java service's SERVER spans: the trace
	// has two (or, with a fan-out, more) roots, as when a service starts a new root with the
	// incoming trace ID.
	faultTwoRoots faultKind = "two_roots"
)

// gtSpan is one span as a service exported it (before any fault).
type gtSpan struct {
	Key      tracegen.SpanKey
	Parent   pcommon.SpanID
	Service  string
	Language string
	Name     string
	Kind     ptrace.SpanKind
	Start    time.Time
	End      time.Time
	Flags    uint32
	Arrived  time.Time
	Requests int // how many export requests carried it (an SDK retry makes 2)
}

// faultRecord says what the proxy did to one span.
type faultRecord struct {
	Fault faultKind
	Key   tracegen.SpanKey
}

// otlpProxy is the pass-through. Its zero value is not usable: see startOTLPProxy.
type otlpProxy struct {
	t      testing.TB
	URL    string // http://127.0.0.1:port/v1/traces
	srv    *http.Server
	conn   *grpc.ClientConn
	client ptraceotlp.GRPCClient
	// selectFault picks the fault of a trace (nil: none).
	selectFault func(pcommon.TraceID) faultKind

	mu        sync.Mutex
	spans     map[tracegen.SpanKey]*gtSpan
	faults    []faultRecord
	requests  int
	lastSpan  time.Time
	forwardOK int
	forwardKO int
}

func startOTLPProxy(t testing.TB, collectorGRPC string, selectFault func(pcommon.TraceID) faultKind) *otlpProxy {
	t.Helper()
	conn, err := grpc.NewClient(collectorGRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("proxy: dial collector %s: %v", collectorGRPC, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy: listen: %v", err)
	}
	p := &otlpProxy{
		t:           t,
		URL:         fmt.Sprintf("http://%s/v1/traces", ln.Addr()),
		conn:        conn,
		client:      ptraceotlp.NewGRPCClient(conn),
		selectFault: selectFault,
		spans:       map[tracegen.SpanKey]*gtSpan{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/traces", p.handle)
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.srv.Shutdown(ctx)
		_ = conn.Close()
	})
	return p
}

func (p *otlpProxy) handle(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, "bad gzip: "+err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	data, err := io.ReadAll(io.LimitReader(body, 64<<20))
	if err != nil {
		http.Error(w, "read: "+err.Error(), http.StatusBadRequest)
		return
	}
	req := ptraceotlp.NewExportRequest()
	if err := req.UnmarshalProto(data); err != nil {
		p.t.Errorf("proxy: a service sent a request that is not OTLP protobuf (%s, %d bytes): %v", r.Header.Get("Content-Type"), len(data), err)
		http.Error(w, "not OTLP protobuf: "+err.Error(), http.StatusBadRequest)
		return
	}
	td := req.Traces()
	p.record(td, now)
	sends := p.applyFaults(td)
	for _, s := range sends {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		_, err := p.client.Export(ctx, ptraceotlp.NewExportRequestFromTraces(s))
		cancel()
		p.mu.Lock()
		if err != nil {
			p.forwardKO++
		} else {
			p.forwardOK++
		}
		p.mu.Unlock()
		if err != nil {
			// The SDK retries on 503; the ground truth dedups by span key.
			http.Error(w, "collector: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	resp, _ := ptraceotlp.NewExportResponse().MarshalProto()
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(resp)
}

// record adds the spans of td to the ground truth.
func (p *otlpProxy) record(td ptrace.Traces, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		svc, _ := rs.Resource().Attributes().Get("service.name")
		lang, _ := rs.Resource().Attributes().Get("telemetry.sdk.language")
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			sps := rs.ScopeSpans().At(j).Spans()
			for k := 0; k < sps.Len(); k++ {
				sp := sps.At(k)
				key := tracegen.SpanKey{TraceID: sp.TraceID(), SpanID: sp.SpanID()}
				if g, ok := p.spans[key]; ok {
					g.Requests++
					continue
				}
				p.spans[key] = &gtSpan{
					Key: key, Parent: sp.ParentSpanID(), Service: svc.AsString(), Language: lang.AsString(),
					Name: sp.Name(), Kind: sp.Kind(), Start: sp.StartTimestamp().AsTime(), End: sp.EndTimestamp().AsTime(),
					Flags: sp.Flags(), Arrived: now, Requests: 1,
				}
				p.lastSpan = now
			}
		}
	}
}

// applyFaults changes td in place for the faults that drop or rewrite, and returns what to
// forward, in order: td, then any re-sent copies.
func (p *otlpProxy) applyFaults(td ptrace.Traces) []ptrace.Traces {
	if p.selectFault == nil {
		return []ptrace.Traces{td}
	}
	resend := ptrace.NewTraces()
	var recs []faultRecord
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		svcV, _ := rs.Resource().Attributes().Get("service.name")
		svc := svcV.AsString()
		var copyRS ptrace.ResourceSpans
		for j := 0; j < rs.ScopeSpans().Len(); j++ {
			ss := rs.ScopeSpans().At(j)
			var copySS ptrace.ScopeSpans
			ss.Spans().RemoveIf(func(sp ptrace.Span) bool {
				f := p.selectFault(sp.TraceID())
				key := tracegen.SpanKey{TraceID: sp.TraceID(), SpanID: sp.SpanID()}
				switch {
				case f == faultDropParent && svc == svcJava && sp.Kind() == ptrace.SpanKindServer:
					recs = append(recs, faultRecord{f, key})
					return true
				case f == faultTwoRoots && svc == svcJava && sp.Kind() == ptrace.SpanKindServer:
					sp.SetParentSpanID(pcommon.NewSpanIDEmpty())
					recs = append(recs, faultRecord{f, key})
				case f == faultFlagFlip && svc == svcJava:
					sp.SetFlags(sp.Flags() &^ 0x01)
					recs = append(recs, faultRecord{f, key})
				case (f == faultDuplicate || f == faultConflict) && svc == svcGo:
					if copySS == (ptrace.ScopeSpans{}) {
						if copyRS == (ptrace.ResourceSpans{}) {
							copyRS = resend.ResourceSpans().AppendEmpty()
							rs.Resource().CopyTo(copyRS.Resource())
							copyRS.SetSchemaUrl(rs.SchemaUrl())
						}
						copySS = copyRS.ScopeSpans().AppendEmpty()
						ss.Scope().CopyTo(copySS.Scope())
						copySS.SetSchemaUrl(ss.SchemaUrl())
					}
					c := copySS.Spans().AppendEmpty()
					sp.CopyTo(c)
					if f == faultConflict {
						c.Attributes().PutStr("realapps.retry", "changed")
					}
					recs = append(recs, faultRecord{f, key})
				}
				return false
			})
		}
	}
	if len(recs) > 0 {
		p.mu.Lock()
		p.faults = append(p.faults, recs...)
		p.mu.Unlock()
	}
	out := []ptrace.Traces{td}
	if resend.SpanCount() > 0 {
		out = append(out, resend)
	}
	return out
}

// snapshot returns the ground truth so far, the fault records and the time the last new
// span arrived.
func (p *otlpProxy) snapshot() (map[tracegen.SpanKey]gtSpan, []faultRecord, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[tracegen.SpanKey]gtSpan, len(p.spans))
	for k, v := range p.spans {
		m[k] = *v
	}
	return m, append([]faultRecord(nil), p.faults...), p.lastSpan
}

// keyString is a span key for messages: trace ID / span ID in hex.
func keyString(k tracegen.SpanKey) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s/%s", k.TraceID, k.SpanID)
	return b.String()
}
