package e2e

// Reading the file exporter's output (OTLP JSON, one line per ConsumeTraces
// call) and querying the spans in it.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// Line is one line of the file exporter output: one ConsumeTraces call.
type Line struct {
	Index  int
	Traces ptrace.Traces
	// SeenAt is when the reader first saw the complete line.
	SeenAt time.Time
}

// OutputReader incrementally parses the file exporter's JSON lines.
type OutputReader struct {
	mu      sync.Mutex
	path    string
	offset  int64
	partial []byte
	lines   []Line
}

// NewOutputReader reads the file at path (which may not exist yet).
func NewOutputReader(path string) *OutputReader { return &OutputReader{path: path} }

// Poll reads what was appended since the last call and parses every
// complete line (a trailing partial line is kept for the next call).
func (r *OutputReader) Poll() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.Open(r.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(r.offset, io.SeekStart); err != nil {
		return err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	r.offset += int64(len(data))
	buf := append(r.partial, data...)
	now := time.Now()
	var um ptrace.JSONUnmarshaler
	for {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			break
		}
		line := bytes.TrimSpace(buf[:i])
		buf = buf[i+1:]
		if len(line) == 0 {
			continue
		}
		td, err := um.UnmarshalTraces(line)
		if err != nil {
			return fmt.Errorf("line %d of %s: %w", len(r.lines)+1, r.path, err)
		}
		r.lines = append(r.lines, Line{Index: len(r.lines), Traces: td, SeenAt: now})
	}
	r.partial = append([]byte(nil), buf...)
	return nil
}

// Lines returns the lines parsed so far.
func (r *OutputReader) Lines() []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.lines)
}

// SpanCount counts span records in lines.
func SpanCount(lines []Line) int {
	n := 0
	for _, l := range lines {
		n += l.Traces.SpanCount()
	}
	return n
}

// SpanRecord is one span found in the output.
type SpanRecord struct {
	Key      tracegen.SpanKey
	Line     int
	SeenAt   time.Time
	Span     ptrace.Span
	Resource pcommon.Resource
}

// Spans flattens lines into span records, in output order.
func Spans(lines []Line) []SpanRecord {
	var out []SpanRecord
	for _, l := range lines {
		rss := l.Traces.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			rs := rss.At(i)
			sss := rs.ScopeSpans()
			for j := 0; j < sss.Len(); j++ {
				sps := sss.At(j).Spans()
				for k := 0; k < sps.Len(); k++ {
					sp := sps.At(k)
					out = append(out, SpanRecord{
						Key:      tracegen.SpanKey{TraceID: sp.TraceID(), SpanID: sp.SpanID()},
						Line:     l.Index,
						SeenAt:   l.SeenAt,
						Span:     sp,
						Resource: rs.Resource(),
					})
				}
			}
		}
	}
	return out
}

// ByTrace groups span records by trace id.
func ByTrace(recs []SpanRecord) map[pcommon.TraceID][]SpanRecord {
	m := map[pcommon.TraceID][]SpanRecord{}
	for _, r := range recs {
		m[r.Key.TraceID] = append(m[r.Key.TraceID], r)
	}
	return m
}

// TraceHead returns the span that carries the trace-level attributes: the
// root (empty parent) if any, else the earliest-starting span.
func TraceHead(recs []SpanRecord) (SpanRecord, bool) {
	if len(recs) == 0 {
		return SpanRecord{}, false
	}
	best := -1
	for i, r := range recs {
		if r.Span.ParentSpanID().IsEmpty() {
			if best < 0 || !recs[best].Span.ParentSpanID().IsEmpty() || r.Span.StartTimestamp() < recs[best].Span.StartTimestamp() {
				best = i
			}
		}
	}
	if best >= 0 {
		return recs[best], true
	}
	best = 0
	for i, r := range recs {
		if r.Span.StartTimestamp() < recs[best].Span.StartTimestamp() {
			best = i
		}
	}
	return recs[best], true
}

// AttrString returns a span attribute as a string (any type, via AsString).
func AttrString(sp ptrace.Span, key string) (string, bool) {
	v, ok := sp.Attributes().Get(key)
	if !ok {
		return "", false
	}
	return v.AsString(), true
}

// FindTraceAttr returns the value of a trace-level attribute: on the trace
// head if present there, else on any span of the trace.
func FindTraceAttr(recs []SpanRecord, key string) (string, bool) {
	if head, ok := TraceHead(recs); ok {
		if v, ok := AttrString(head.Span, key); ok {
			return v, true
		}
	}
	for _, r := range recs {
		if v, ok := AttrString(r.Span, key); ok {
			return v, true
		}
	}
	return "", false
}

// attrStrings returns a span attribute as a list of strings: the elements of
// a slice value, or the single value of a scalar.
func attrStrings(sp ptrace.Span, key string) ([]string, bool) {
	v, ok := sp.Attributes().Get(key)
	if !ok {
		return nil, false
	}
	if v.Type() != pcommon.ValueTypeSlice {
		return []string{v.AsString()}, true
	}
	s := v.Slice()
	out := make([]string, 0, s.Len())
	for i := 0; i < s.Len(); i++ {
		out = append(out, s.At(i).AsString())
	}
	return out, true
}

// traceAttrStrings is attrStrings on the trace head (root, else earliest).
func traceAttrStrings(recs []SpanRecord, key string) ([]string, bool) {
	head, ok := TraceHead(recs)
	if !ok {
		return nil, false
	}
	return attrStrings(head.Span, key)
}
