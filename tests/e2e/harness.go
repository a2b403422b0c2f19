// Package e2e runs the custom collector binary (built by `make otelcol` into
// build/otelcol/otelcol-traceconsistency) as a subprocess and checks what the
// traceconsistency processor releases, through the file exporter's output.
//
// It builds nothing itself. The binary path is $OTELCOL_BIN if set, else
// <repo>/build/otelcol/otelcol-traceconsistency. When the binary is absent the
// tests SKIP, unless E2E_REQUIRED=1, in which case they FAIL.
// E2E_WITHOUT_PROCESSOR=1 runs the harness against a pipeline without the
// traceconsistency processor (to exercise the harness itself with any
// collector that has the otlp receiver, file exporter and health_check
// extension); tests that need the processor then skip or relax their checks.
//
// Everything listens on 127.0.0.1 only and every wait is bounded.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

// Env variables understood by the harness.
const (
	EnvBinary           = "OTELCOL_BIN"
	EnvRequired         = "E2E_REQUIRED"
	EnvWithoutProcessor = "E2E_WITHOUT_PROCESSOR"
)

// ProcessorType is the component type of our processor.
const ProcessorType = "traceconsistency"

// DefaultBinaryRel is the binary path relative to the repository root.
const DefaultBinaryRel = "build/otelcol/otelcol-traceconsistency"

// RepoRoot returns the repository root (two levels above this file).
func RepoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		wd, _ := os.Getwd()
		return filepath.Clean(filepath.Join(wd, "..", ".."))
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// BinaryPath returns the collector binary to run: $OTELCOL_BIN (absolute,
// or relative to the working directory, else to the repo root) or
// <repo>/build/otelcol/otelcol-traceconsistency.
func BinaryPath() string {
	if p := os.Getenv(EnvBinary); p != "" {
		if filepath.IsAbs(p) {
			return p
		}
		if abs, err := filepath.Abs(p); err == nil {
			if _, err := os.Stat(abs); err == nil {
				return abs
			}
		}
		return filepath.Join(RepoRoot(), p)
	}
	return filepath.Join(RepoRoot(), DefaultBinaryRel)
}

// Required reports whether E2E_REQUIRED=1 (absence of the binary fails).
func Required() bool { return os.Getenv(EnvRequired) == "1" }

// WithoutProcessor reports whether E2E_WITHOUT_PROCESSOR=1.
func WithoutProcessor() bool { return os.Getenv(EnvWithoutProcessor) == "1" }

var (
	componentsOnce sync.Map // binary path -> *componentsResult
)

type componentsResult struct {
	once  sync.Once
	names map[string][]string // kind (receivers, processors, ...) -> names
	err   error
}

// Components runs `<bin> components` (bounded) and returns the component
// names per kind (receivers, processors, exporters, extensions, ...).
func Components(bin string) (map[string][]string, error) {
	v, _ := componentsOnce.LoadOrStore(bin, &componentsResult{})
	cr := v.(*componentsResult)
	cr.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "components").CombinedOutput()
		if err != nil {
			cr.err = fmt.Errorf("%s components: %w\n%s", bin, err, out)
			return
		}
		cr.names = parseComponents(out)
	})
	return cr.names, cr.err
}

func parseComponents(out []byte) map[string][]string {
	names := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if line != "" && line[0] != ' ' && strings.HasSuffix(line, ":") {
			section = strings.TrimSuffix(line, ":")
			continue
		}
		if s := strings.TrimSpace(line); strings.HasPrefix(s, "- name: ") {
			names[section] = append(names[section], strings.TrimSpace(strings.TrimPrefix(s, "- name: ")))
		}
	}
	return names
}

// RequireBinary returns the collector binary, or skips the test when it is
// absent (fails when E2E_REQUIRED=1). The same rule applies when the binary
// lacks a component the tests need: the otlp receiver, file exporter,
// health_check extension, and the traceconsistency processor (unless
// E2E_WITHOUT_PROCESSOR=1).
func RequireBinary(t testing.TB) string {
	t.Helper()
	bin := BinaryPath()
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		msg := fmt.Sprintf("collector binary %s not found (build it with `make otelcol`, or set %s); set %s=1 to make this a failure",
			bin, EnvBinary, EnvRequired)
		if Required() {
			t.Fatalf("%s=1: %s", EnvRequired, msg)
		}
		t.Skip(msg)
	}
	comps, err := Components(bin)
	if err != nil {
		t.Fatalf("cannot list the components of %s: %v", bin, err)
	}
	need := map[string][]string{
		"receivers":  {"otlp"},
		"exporters":  {"file"},
		"extensions": {"health_check"},
	}
	if !WithoutProcessor() {
		need["processors"] = []string{ProcessorType}
	}
	var missing []string
	for kind, names := range need {
		for _, n := range names {
			if !slices.Contains(comps[kind], n) {
				missing = append(missing, kind+"/"+n)
			}
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		msg := fmt.Sprintf("collector binary %s lacks components the e2e tests need: %s (add them to the ocb manifest and rebuild; %s=1 runs the harness without the processor); set %s=1 to make this a failure",
			bin, strings.Join(missing, ", "), EnvWithoutProcessor, EnvRequired)
		if Required() {
			t.Fatalf("%s=1: %s", EnvRequired, msg)
		}
		t.Skip(msg)
	}
	return bin
}

// FreePort returns a free TCP port on 127.0.0.1 (listen on :0, then close).
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeAddr returns "127.0.0.1:<free port>".
func FreeAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", FreePort(t))
}

// TraceConsistencyYAML returns the processors YAML for the traceconsistency
// processor with the given knobs, one "key: value" per line
// (e.g. "quiet_period: 200ms").
func TraceConsistencyYAML(knobs ...string) string {
	if len(knobs) == 0 {
		return ProcessorType + ":\n"
	}
	var b strings.Builder
	b.WriteString(ProcessorType + ":\n")
	for _, k := range knobs {
		b.WriteString("  " + strings.TrimSpace(k) + "\n")
	}
	return b.String()
}

// Collector is a running collector subprocess.
type Collector struct {
	t            testing.TB
	Binary       string
	Dir          string
	ConfigPath   string
	OutputPath   string
	LogPath      string
	OTLPEndpoint string // 127.0.0.1:port (gRPC)
	HealthURL    string
	MetricsURL   string // Prometheus endpoint of the collector's own metrics
	// Processor is true when the pipeline has the traceconsistency processor.
	Processor bool

	cmd      *exec.Cmd
	logFile  *os.File
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
	out      *OutputReader
}

// ConfigOptions is what WriteConfig puts in a collector config.
type ConfigOptions struct {
	// ProcessorsYAML is the block under `processors:`, unindented
	// (e.g. TraceConsistencyYAML("quiet_period: 200ms")).
	ProcessorsYAML string
	// Pipeline lists the processor ids of the traces pipeline, in order;
	// nil means the top-level keys of ProcessorsYAML, in order.
	Pipeline []string
	// OTLPEndpoint, HealthEndpoint, MetricsPort, OutputPath are filled with
	// free loopback ports / a temp file when empty.
	OTLPEndpoint   string
	HealthEndpoint string
	MetricsPort    int
	OutputPath     string
	// LogLevel of the collector's own logs (default info).
	LogLevel string
	// ExtraExportersYAML is an unindented YAML block of more exporters,
	// defined after the file exporter (which is always defined), e.g.
	// "otlp_grpc/next:\n  endpoint: 127.0.0.1:4317\n".
	ExtraExportersYAML string
	// Exporters lists the exporter ids of the traces pipeline; nil means
	// [file].
	Exporters []string
	// ExtraExtensionsYAML is an unindented YAML block of more extensions,
	// defined after health_check (always defined and enabled) and enabled too,
	// e.g. "file_storage/queue:\n  directory: /tmp/q\n".
	ExtraExtensionsYAML string
}

// TopLevelKeys returns the unindented keys of a YAML block, in order.
func TopLevelKeys(yaml string) []string {
	var keys []string
	for _, line := range strings.Split(yaml, "\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' || line[0] == '#' {
			continue
		}
		if i := strings.Index(line, ":"); i > 0 {
			keys = append(keys, strings.TrimSpace(line[:i]))
		}
	}
	return keys
}

func indent(s, pad string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		if line == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString(pad + line + "\n")
	}
	return b.String()
}

// RenderConfig returns the collector YAML for opts (all fields must be set).
func RenderConfig(opts ConfigOptions) string {
	procs := "  {}\n"
	if strings.TrimSpace(opts.ProcessorsYAML) != "" {
		procs = indent(opts.ProcessorsYAML, "  ")
	}
	pipeline := opts.Pipeline
	if pipeline == nil {
		pipeline = TopLevelKeys(opts.ProcessorsYAML)
	}
	level := opts.LogLevel
	if level == "" {
		level = "info"
	}
	extraExporters := ""
	if strings.TrimSpace(opts.ExtraExportersYAML) != "" {
		extraExporters = indent(opts.ExtraExportersYAML, "  ")
	}
	exporters := opts.Exporters
	if exporters == nil {
		exporters = []string{"file"}
	}
	extraExtensions := ""
	extensions := []string{"health_check"}
	if strings.TrimSpace(opts.ExtraExtensionsYAML) != "" {
		extraExtensions = indent(opts.ExtraExtensionsYAML, "  ")
		extensions = append(extensions, TopLevelKeys(opts.ExtraExtensionsYAML)...)
	}
	return fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
processors:
%sexporters:
  file:
    path: %s
    format: json
    flush_interval: 50ms
%sextensions:
  health_check:
    endpoint: %s
%sservice:
  extensions: [%s]
  telemetry:
    logs:
      level: %s
    metrics:
      level: detailed
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: %d
  pipelines:
    traces:
      receivers: [otlp]
      processors: [%s]
      exporters: [%s]
`, opts.OTLPEndpoint, procs, opts.OutputPath, extraExporters, opts.HealthEndpoint, extraExtensions,
		strings.Join(extensions, ", "), level, opts.MetricsPort,
		strings.Join(pipeline, ", "), strings.Join(exporters, ", "))
}

// WriteConfig fills the empty fields of opts (free loopback ports, an output
// file in dir), writes the config into dir and returns its path and the
// completed options.
func WriteConfig(t testing.TB, dir string, opts ConfigOptions) (string, ConfigOptions) {
	t.Helper()
	if opts.OTLPEndpoint == "" {
		opts.OTLPEndpoint = FreeAddr(t)
	}
	if opts.HealthEndpoint == "" {
		opts.HealthEndpoint = FreeAddr(t)
	}
	if opts.MetricsPort == 0 {
		opts.MetricsPort = FreePort(t)
	}
	if opts.OutputPath == "" {
		opts.OutputPath = filepath.Join(dir, "traces.jsonl")
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(RenderConfig(opts)), 0o644); err != nil {
		t.Fatalf("write config: %v", err)
	}
	return path, opts
}

// StartCollector starts the collector binary with the otlp receiver, the
// given processors (a YAML block under `processors:`, e.g.
// TraceConsistencyYAML("quiet_period: 200ms")), the file exporter and the
// health_check extension, all on free loopback ports, and waits (bounded)
// until health_check reports ready. With E2E_WITHOUT_PROCESSOR=1 the
// processors are left out. The collector is stopped (SIGTERM) at cleanup;
// its log is printed if the test failed.
func StartCollector(t testing.TB, processorsYAML string) *Collector {
	t.Helper()
	return StartCollectorWith(t, ConfigOptions{ProcessorsYAML: processorsYAML})
}

// StartCollectorWith is StartCollector with full options.
func StartCollectorWith(t testing.TB, opts ConfigOptions) *Collector {
	t.Helper()
	bin := RequireBinary(t)
	if WithoutProcessor() {
		opts.ProcessorsYAML = ""
		opts.Pipeline = []string{}
	}
	return startCollector(t, bin, opts)
}

// startCollector starts bin with opts, without any checks of the binary.
func startCollector(t testing.TB, bin string, opts ConfigOptions) *Collector {
	t.Helper()
	dir := t.TempDir()
	cfgPath, opts := WriteConfig(t, dir, opts)
	c := &Collector{
		t:            t,
		Binary:       bin,
		Dir:          dir,
		ConfigPath:   cfgPath,
		OutputPath:   opts.OutputPath,
		LogPath:      filepath.Join(dir, "collector.log"),
		OTLPEndpoint: opts.OTLPEndpoint,
		HealthURL:    "http://" + opts.HealthEndpoint + "/",
		MetricsURL:   fmt.Sprintf("http://127.0.0.1:%d/metrics", opts.MetricsPort),
		Processor:    slices.Contains(TopLevelKeys(opts.ProcessorsYAML), ProcessorType),
		done:         make(chan struct{}),
	}
	c.out = NewOutputReader(c.OutputPath)
	lf, err := os.Create(c.LogPath)
	if err != nil {
		t.Fatalf("create log: %v", err)
	}
	c.logFile = lf
	c.cmd = exec.Command(bin, "--config", cfgPath)
	c.cmd.Stdout = lf
	c.cmd.Stderr = lf
	c.cmd.Dir = dir
	if err := c.cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping collector: %v", err)
		}
		if t.Failed() {
			c.dumpLog()
		}
	})
	if err := c.waitReady(30 * time.Second); err != nil {
		t.Fatalf("collector did not become ready: %v\nconfig:\n%s", err, RenderConfig(opts))
	}
	return c
}

func (c *Collector) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		resp, err := client.Get(c.HealthURL)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("health_check status %d", resp.StatusCode)
		} else {
			last = err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, last)
		}
		select {
		case <-c.done:
			return fmt.Errorf("collector exited early: %v", c.waitErr)
		case <-tick.C:
		}
	}
}

// Exited reports whether the process has exited.
func (c *Collector) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits (bounded: 20s, then SIGKILL) for the
// collector to exit; the processor releases every buffered trace on
// shutdown, so the output is final afterwards. Stop is idempotent and
// returns an error if the collector exited uncleanly or had to be killed.
func (c *Collector) Stop() error {
	c.stopOnce.Do(func() {
		defer c.logFile.Close()
		if c.Exited() {
			if c.waitErr != nil {
				c.stopErr = fmt.Errorf("collector had exited: %w", c.waitErr)
			}
			return
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
			if c.waitErr != nil {
				c.stopErr = fmt.Errorf("collector exit after SIGTERM: %w", c.waitErr)
			}
		case <-time.After(20 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
			c.stopErr = errors.New("collector did not exit within 20s of SIGTERM; killed")
		}
	})
	return c.stopErr
}

// Log returns the collector's stdout+stderr so far.
func (c *Collector) Log() string {
	b, _ := os.ReadFile(c.LogPath)
	return string(b)
}

func (c *Collector) dumpLog() {
	log := c.Log()
	const max = 20000
	if len(log) > max {
		log = "...(truncated)...\n" + log[len(log)-max:]
	}
	c.t.Logf("collector log (%s):\n%s", c.LogPath, log)
}

// Output returns the output reader of the file exporter.
func (c *Collector) Output() *OutputReader { return c.out }

// WaitForSpans polls the output (bounded by timeout) until at least n span
// records have arrived, and returns the lines read so far. It fails the
// test at the deadline, or if the collector exits.
func (c *Collector) WaitForSpans(n int, timeout time.Duration) []Line {
	c.t.Helper()
	return c.WaitFor(timeout, fmt.Sprintf("%d spans", n), func(lines []Line) bool {
		return SpanCount(lines) >= n
	})
}

// WaitFor polls the output every 20ms until cond holds or timeout passes
// (then it fails the test, describing what it waited for).
func (c *Collector) WaitFor(timeout time.Duration, what string, cond func([]Line) bool) []Line {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := c.out.Poll(); err != nil {
			c.t.Fatalf("reading output: %v", err)
		}
		lines := c.out.Lines()
		if cond(lines) {
			return lines
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for %s; have %d lines, %d spans", timeout, what, len(lines), SpanCount(lines))
		}
		if c.Exited() {
			c.t.Fatalf("collector exited while waiting for %s: %v", what, c.waitErr)
		}
		<-tick.C
	}
}

// StopAndRead stops the collector and returns every output line.
func (c *Collector) StopAndRead() []Line {
	c.t.Helper()
	if err := c.Stop(); err != nil {
		c.t.Errorf("stop: %v", err)
	}
	if err := c.out.Poll(); err != nil {
		c.t.Fatalf("reading output: %v", err)
	}
	return c.out.Lines()
}

// SendSDK sends the workload of g to the collector through the OTel SDK,
// bounded by timeout.
func (c *Collector) SendSDK(g *tracegen.Generator, timeout time.Duration) tracegen.SendResult {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := tracegen.SendSDK(ctx, g, tracegen.SendOptions{Endpoint: c.OTLPEndpoint, Concurrency: 2})
	if err != nil {
		c.t.Fatalf("SendSDK: %v", err)
	}
	if res.Stopped {
		c.t.Fatalf("SendSDK did not finish within %v", timeout)
	}
	return res
}

// Dial returns a pdata OTLP client for the collector (closed at cleanup).
func (c *Collector) Dial() *tracegen.Client {
	c.t.Helper()
	cl, err := tracegen.Dial(c.OTLPEndpoint)
	if err != nil {
		c.t.Fatalf("dial: %v", err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

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

// RunResult is the outcome of RunCollector.
type RunResult struct {
	ExitCode int // -1 when killed at the timeout
	Stdout   string
	Stderr   string
	TimedOut bool
}

// RunCollector runs the binary with --config (configYAML written to a temp
// file) and waits for it to exit, bounded by timeout (then it is killed and
// TimedOut is set).
func RunCollector(t testing.TB, bin, configYAML string, timeout time.Duration) RunResult {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(configYAML), 0o644); err != nil {
		t.Fatalf("write config: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config", path)
	cmd.Dir = dir
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	res := RunResult{Stdout: stdout.String(), Stderr: stderr.String()}
	if ctx.Err() != nil {
		res.ExitCode, res.TimedOut = -1, true
		return res
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		res.ExitCode = ee.ExitCode()
		return res
	}
	if err != nil {
		t.Fatalf("run %s: %v", bin, err)
	}
	return res
}
