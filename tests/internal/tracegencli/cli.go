// Package tracegencli is the command line of tests/cmd/tracegen: its flag
// set, the validation of a command line, and the run (send a workload to a
// loopback OTLP gRPC endpoint, print a summary). It is a package so that
// tests can parse and run the exact command lines the READMEs show.
package tracegencli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// Options is a parsed and validated command line.
type Options struct {
	Endpoint    string
	Mode        string // "sdk" or "pdata"
	Duration    time.Duration
	Concurrency int
	Rate        float64
	// Seed is the workload seed; SeedGiven is false when it was picked at
	// random because -seed was absent.
	Seed      int64
	SeedGiven bool
	// Config is the generator config (without a BaseTime: traces are
	// anchored at the clock).
	Config         tracegen.Config
	JSON           bool
	RequestTimeout time.Duration
}

// Modes are the values of -mode.
var Modes = []string{"sdk", "pdata"}

// NewFlagSet returns the flag set of the command, writing usage and errors
// to stderr, and the Options its flags fill in (Seed, SeedGiven and
// Config.Broken are completed by Parse).
func NewFlagSet(stderr io.Writer) (*flag.FlagSet, *Options, *string) {
	fs := flag.NewFlagSet("tracegen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &Options{}
	c := &o.Config
	fs.StringVar(&o.Endpoint, "endpoint", tracegen.DefaultEndpoint, "OTLP gRPC endpoint (loopback only)")
	fs.StringVar(&o.Mode, "mode", "sdk", "sdk: OpenTelemetry Go SDK with context propagation; pdata: interleaved ptrace batches (fast)")
	fs.IntVar(&c.Traces, "traces", 1000, "number of traces to send (upper bound when -duration ends first)")
	fs.DurationVar(&o.Duration, "duration", time.Minute, "stop after this long even if traces remain")
	fs.IntVar(&o.Concurrency, "concurrency", 1, "concurrent senders (pdata: one gRPC connection each)")
	fs.Float64Var(&o.Rate, "rate", 0, "limit to this many spans per second over all senders (0 = unlimited)")
	fs.Int64Var(&o.Seed, "seed", 0, "workload seed (default: a fresh random seed per run, printed in the summary; -seed N reproduces a run)")
	broken := fs.String("broken", "", "broken kinds, comma list or 'all': "+kindNames())
	fs.IntVar(&c.BrokenEvery, "broken-every", 10, "every Nth trace is broken (with -broken)")
	fs.IntVar(&c.Services, "services", 6, "number of services (resources)")
	fs.IntVar(&c.MinSpans, "min-spans", 5, "minimum spans per trace")
	fs.IntVar(&c.MaxSpans, "max-spans", 50, "maximum spans per trace")
	fs.IntVar(&c.Attributes, "attributes", 10, "attributes per span")
	fs.IntVar(&c.SpansPerBatch, "spans-per-batch", 100, "pdata: spans per export request")
	fs.IntVar(&c.Interleave, "interleave", 8, "pdata: traces whose spans are mixed across batches")
	fs.BoolVar(&c.LiveClock, "live-clock", true, "anchor each trace at the wall clock when generated (false: all at start time)")
	fs.BoolVar(&o.JSON, "json", false, "print the summary as one JSON object")
	fs.DurationVar(&o.RequestTimeout, "request-timeout", 10*time.Second, "timeout of one export request")
	return fs, o, broken
}

// Parse parses and validates a command line (without the program name). It
// returns flag.ErrHelp for -help / -h (the usage is then written to stderr).
// Without -seed, the seed is drawn at random, so two runs send different
// trace IDs.
func Parse(args []string, stderr io.Writer) (Options, error) {
	fs, o, broken := NewFlagSet(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return Options{}, err
		}
		return Options{}, printedError{err}
	}
	if fs.NArg() > 0 {
		return Options{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "seed" {
			o.SeedGiven = true
		}
	})
	if !o.SeedGiven {
		o.Seed = rand.Int64() // math/rand/v2's global source is seeded randomly per process
	}
	o.Config.Seed = o.Seed
	kinds, err := tracegen.ParseBrokenKinds(*broken)
	if err != nil {
		return Options{}, err
	}
	o.Config.Broken = kinds
	var errs []error
	if o.Mode != "sdk" && o.Mode != "pdata" {
		errs = append(errs, fmt.Errorf("-mode must be sdk or pdata, got %q", o.Mode))
	}
	if o.Duration <= 0 {
		errs = append(errs, errors.New("-duration must be positive"))
	}
	if err := tracegen.CheckLoopback(o.Endpoint); err != nil {
		errs = append(errs, err)
	}
	if err := o.Config.Defaults().Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return Options{}, err
	}
	return *o, nil
}

// Send sends the workload of o (bounded by o.Duration and ctx) and returns
// what was sent.
func Send(ctx context.Context, o Options) (tracegen.SendResult, error) {
	g, err := tracegen.New(o.Config)
	if err != nil {
		return tracegen.SendResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Duration)
	defer cancel()
	opts := tracegen.SendOptions{
		Endpoint: o.Endpoint, Concurrency: o.Concurrency, SpansPerSecond: o.Rate, RequestTimeout: o.RequestTimeout,
	}
	if o.Mode == "sdk" {
		return tracegen.SendSDK(ctx, g, opts)
	}
	return tracegen.SendPData(ctx, g, opts)
}

// Summary is what a run prints.
type Summary struct {
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

// Run is the command: parse args, send, print the summary. It returns the
// exit code: 0 (also for -help), 1 when sending failed, 2 for a bad command
// line.
func Run(args []string, stdout, stderr io.Writer) int {
	o, err := Parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		if !errors.As(err, new(printedError)) {
			fmt.Fprintln(stderr, "tracegen:", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Send(ctx, o)

	s := Summary{
		Mode: o.Mode, Endpoint: o.Endpoint, Seed: o.Seed, Traces: res.Traces, Spans: res.Spans,
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
	if o.JSON {
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

// printedError is an error of flag.FlagSet.Parse, which has already written
// it (and the usage) to stderr.
type printedError struct{ err error }

func (e printedError) Error() string { return e.err.Error() }
func (e printedError) Unwrap() error { return e.err }

func printSummary(w io.Writer, s Summary) {
	fmt.Fprintf(w, "mode %s -> %s (seed %d; -seed %d sends the same traces again)\n", s.Mode, s.Endpoint, s.Seed, s.Seed)
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
	var out []string
	for _, k := range tracegen.AllBrokenKinds() {
		out = append(out, string(k))
	}
	return strings.Join(out, ",")
}
