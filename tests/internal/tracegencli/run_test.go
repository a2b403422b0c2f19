package tracegencli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
)

type sink struct {
	ptraceotlp.UnimplementedGRPCServer
	spans atomic.Int64
}

func (s *sink) Export(_ context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	s.spans.Add(int64(req.Traces().SpanCount()))
	return ptraceotlp.NewExportResponse(), nil
}

func startSink(t *testing.T) (*sink, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{}
	srv := grpc.NewServer()
	ptraceotlp.RegisterGRPCServer(srv, s)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return s, l.Addr().String()
}

func TestRunModes(t *testing.T) {
	for _, mode := range []string{"pdata", "sdk"} {
		t.Run(mode, func(t *testing.T) {
			s, addr := startSink(t)
			var out, errb bytes.Buffer
			code := Run([]string{"-endpoint", addr, "-mode", mode, "-traces", "50", "-concurrency", "2",
				"-broken", "all", "-broken-every", "5", "-duration", "30s", "-json"}, &out, &errb)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			var sum Summary
			if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
				t.Fatalf("%v: %s", err, out.String())
			}
			if sum.Traces != 50 || sum.Spans == 0 || int64(sum.Spans) != s.spans.Load() || sum.Stopped {
				t.Fatalf("summary %+v, sink got %d spans", sum, s.spans.Load())
			}
			if len(sum.Broken) != 9 {
				t.Fatalf("broken kinds %v", sum.Broken)
			}
		})
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-endpoint", "10.1.2.3:4317"},
		{"-mode", "http"},
		{"-broken", "nope"},
		{"-duration", "0s"},
		{"-min-spans", "1"},
	} {
		var out, errb bytes.Buffer
		if code := Run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	var out, errb bytes.Buffer
	Run([]string{"-endpoint", "10.1.2.3:4317"}, &out, &errb)
	if !strings.Contains(errb.String(), "loopback") {
		t.Errorf("non-loopback endpoint error does not say why: %s", errb.String())
	}
}
