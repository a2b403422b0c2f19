// Command tracegen sends a deterministic workload of realistic traces (see
// package tracegen) to a loopback OTLP gRPC endpoint, through the real
// OpenTelemetry Go SDK (-mode sdk) or as pdata batches over several
// concurrent gRPC connections (-mode pdata, the fast one for load tests).
// It stops by itself after -traces traces or -duration, whichever comes
// first, and prints a summary.
//
//	go run ./cmd/tracegen -endpoint 127.0.0.1:4317 -traces 1000
//	go run ./cmd/tracegen -mode pdata -traces 200000 -concurrency 4 -duration 30s
//	go run ./cmd/tracegen -broken missing_parent,two_roots -broken-every 5
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

type summary struct {
	Mode           string         `json:"mode"`
	Endpoint       string         `json:"endpoint"`
	Seed           int64          `json:"seed"`
	Traces         int            `json:"traces"`
	Spans          int            `json:"spans"`
	Requests       int            `json:"requests"`
	Seconds        float64        `json:"seconds"`
	SpansPerSecond float64        `json:"spans_per_second"`
	Stopped        bool           `json:"stopped_early"`
	Broken         map[string]int `json:"broken"`
	Error          string         `json:"error,omitempty"`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("tracegen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		endpoint     = fs.String("endpoint", tracegen.DefaultEndpoint, "OTLP gRPC endpoint (loopback only)")
		mode         = fs.String("mode", "sdk", "sdk: OpenTelemetry Go SDK with context propagation; pdata: interleaved ptrace batches (fast)")
		traces       = fs.Int("traces", 1000, "number of traces to send (upper bound when -duration ends first)")
		duration     = fs.Duration("duration", time.Minute, "stop after this long even if traces remain")
		concurrency  = fs.Int("concurrency", 1, "concurrent senders (pdata: one gRPC connection each)")
		rate         = fs.Float64("rate", 0, "limit to this many spans per second over all senders (0 = unlimited)")
		seed         = fs.Int64("seed", 1, "workload seed")
		broken       = fs.String("broken", "", "broken kinds, comma list or 'all': "+kindNames())
		brokenEvery  = fs.Int("broken-every", 10, "every Nth trace is broken (with -broken)")
		services     = fs.Int("services", 6, "number of services (resources)")
		minSpans     = fs.Int("min-spans", 5, "minimum spans per trace")
		maxSpans     = fs.Int("max-spans", 50, "maximum spans per trace")
		attributes   = fs.Int("attributes", 10, "attributes per span")
		batch        = fs.Int("spans-per-batch", 100, "pdata: spans per export request")
		interleave   = fs.Int("interleave", 8, "pdata: traces whose spans are mixed across batches")
		liveClock    = fs.Bool("live-clock", true, "anchor each trace at the wall clock when generated (false: all at start time)")
		jsonOut      = fs.Bool("json", false, "print the summary as one JSON object")
		requestLimit = fs.Duration("request-timeout", 10*time.Second, "timeout of one export request")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	kinds, err := tracegen.ParseBrokenKinds(*broken)
	if err != nil {
		fmt.Fprintln(stderr, "tracegen:", err)
		return 2
	}
	if *mode != "sdk" && *mode != "pdata" {
		fmt.Fprintf(stderr, "tracegen: -mode must be sdk or pdata, got %q\n", *mode)
		return 2
	}
	if *duration <= 0 {
		fmt.Fprintln(stderr, "tracegen: -duration must be positive")
		return 2
	}
	if err := tracegen.CheckLoopback(*endpoint); err != nil {
		fmt.Fprintln(stderr, "tracegen:", err)
		return 2
	}
	g, err := tracegen.New(tracegen.Config{
		Seed: *seed, Traces: *traces, Services: *services, MinSpans: *minSpans, MaxSpans: *maxSpans,
		Attributes: *attributes, SpansPerBatch: *batch, Interleave: *interleave,
		Broken: kinds, BrokenEvery: *brokenEvery, LiveClock: *liveClock,
	})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()

	opts := tracegen.SendOptions{
		Endpoint: *endpoint, Concurrency: *concurrency, SpansPerSecond: *rate, RequestTimeout: *requestLimit,
	}
	var res tracegen.SendResult
	if *mode == "sdk" {
		res, err = tracegen.SendSDK(ctx, g, opts)
	} else {
		res, err = tracegen.SendPData(ctx, g, opts)
	}

	s := summary{
		Mode: *mode, Endpoint: *endpoint, Seed: *seed, Traces: res.Traces, Spans: res.Spans,
		Requests: res.Requests, Seconds: res.Elapsed.Seconds(), SpansPerSecond: res.SpansPerSecond(),
		Stopped: res.Stopped, Broken: map[string]int{},
	}
	if res.Truth != nil {
		for _, tt := range res.Truth.Traces {
			if tt.Broken != "" {
				s.Broken[string(tt.Broken)]++
			}
		}
	}
	if err != nil {
		s.Error = err.Error()
	}
	if *jsonOut {
		enc := json.NewEncoder(stdout)
		_ = enc.Encode(s)
	} else {
		printSummary(stdout, s)
	}
	if err != nil {
		fmt.Fprintln(stderr, "tracegen: error:", err)
		return 1
	}
	return 0
}

func printSummary(w io.Writer, s summary) {
	fmt.Fprintf(w, "mode %s -> %s (seed %d)\n", s.Mode, s.Endpoint, s.Seed)
	fmt.Fprintf(w, "traces sent:  %d\n", s.Traces)
	fmt.Fprintf(w, "spans sent:   %d (in %d export requests)\n", s.Spans, s.Requests)
	fmt.Fprintf(w, "time:         %.3fs\n", s.Seconds)
	fmt.Fprintf(w, "throughput:   %.0f spans/s\n", s.SpansPerSecond)
	if len(s.Broken) > 0 {
		var ks []string
		for k := range s.Broken {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		fmt.Fprint(w, "broken:      ")
		for _, k := range ks {
			fmt.Fprintf(w, " %s=%d", k, s.Broken[k])
		}
		fmt.Fprintln(w)
	}
	if s.Stopped {
		fmt.Fprintln(w, "stopped early (duration reached or interrupted)")
	}
}

func kindNames() string {
	out := ""
	for i, k := range tracegen.AllBrokenKinds() {
		if i > 0 {
			out += ","
		}
		out += string(k)
	}
	return out
}
