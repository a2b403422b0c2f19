package e2e

// The collector as a subprocess: start (with a rendered config or a given
// one), wait for health_check, poll the output, stop.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/traceconsistency/traceconsistency/tests/tracegen"
)

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
	processor := slices.Contains(TopLevelKeys(opts.ProcessorsYAML), ProcessorType)
	return launch(t, bin, dir, cfgPath, nil, opts, processor, func() string { return RenderConfig(opts) })
}

// StartCollectorFromFile starts the collector binary on an existing config
// file (e.g. examples/collector.yaml) with extra environment variables
// ("KEY=value"; such configs take their addresses and paths from
// ${env:...}), in a temp working directory, and waits (bounded) until
// health_check reports ready. addrs says where the config, so configured,
// listens and writes: OTLPEndpoint, HealthEndpoint, MetricsPort and
// OutputPath must all be set. The pipeline is assumed to hold the
// traceconsistency processor. Stopped and logged as StartCollector.
func StartCollectorFromFile(t testing.TB, configPath string, env []string, addrs ConfigOptions) *Collector {
	t.Helper()
	bin := RequireBinary(t)
	if addrs.OTLPEndpoint == "" || addrs.HealthEndpoint == "" || addrs.MetricsPort == 0 || addrs.OutputPath == "" {
		t.Fatalf("StartCollectorFromFile: every address and the output path must be given, got %+v", addrs)
	}
	show := func() string {
		b, _ := os.ReadFile(configPath)
		return fmt.Sprintf("(%s with %v)\n%s", configPath, env, b)
	}
	return launch(t, bin, t.TempDir(), configPath, env, addrs, true, show)
}

// launch starts bin on cfgPath in dir (with env added to the environment)
// and waits until it is ready; showConfig describes the config on failure.
func launch(t testing.TB, bin, dir, cfgPath string, env []string, opts ConfigOptions, processor bool, showConfig func() string) *Collector {
	t.Helper()
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
		Processor:    processor,
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
	if len(env) > 0 {
		c.cmd.Env = append(os.Environ(), env...)
	}
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
		t.Fatalf("collector did not become ready: %v\nconfig:\n%s", err, showConfig())
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
