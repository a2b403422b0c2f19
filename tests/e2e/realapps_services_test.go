package e2e

// The services of the real-application harness as processes: Python (Flask under
// opentelemetry-instrument), Node.js (Express with auto-instrumentations-node), Java (the JDK
// HTTP server under the opentelemetry-javaagent), Go (otelhttp + otlptracehttp), and a plain
// HTTP endpoint without any SDK. Installed by `make realapps-deps` into build/realapps.

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Service names (service.name of each resource).
const (
	svcPython = "realapps-python"
	svcNode   = "realapps-node"
	svcJava   = "realapps-java"
	svcGo     = "realapps-go"
)

// realappsDirs are the installed dependencies and the sources of the services.
type realappsDirs struct {
	Build string // build/realapps
	Src   string // tests/realapps
}

func (d realappsDirs) check() error {
	for _, p := range []string{
		filepath.Join(d.Build, "py/bin/opentelemetry-instrument"),
		filepath.Join(d.Build, "node/node_modules/@opentelemetry/auto-instrumentations-node"),
		filepath.Join(d.Build, "java/opentelemetry-javaagent.jar"),
		filepath.Join(d.Build, "java/classes/App.class"),
		filepath.Join(d.Build, "goservice"),
	} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s missing (run `make realapps-deps`)", p)
		}
	}
	if _, err := exec.LookPath("faketime"); err != nil {
		return errors.New("faketime missing (run `make realapps-deps`)")
	}
	return nil
}

// serviceSpec is how one service is started.
type serviceSpec struct {
	Name string
	Port int
	// Delay is OTEL_BSP_SCHEDULE_DELAY in ms; 0 leaves it unset (the SDK's default, 5 s).
	Delay int
	// Faketime, when set, runs the service under faketime with this offset (e.g. "+0.3").
	Faketime string
}

// service is a running service process (its own process group).
type service struct {
	spec serviceSpec
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// startService starts spec with the OTLP endpoint proxyURL and the URLs of its callees.
func startService(t testing.TB, d realappsDirs, spec serviceSpec, proxyURL string, env map[string]string) *service {
	t.Helper()
	var argv []string
	switch spec.Name {
	case svcPython:
		argv = []string{filepath.Join(d.Build, "py/bin/opentelemetry-instrument"), filepath.Join(d.Build, "py/bin/python"), filepath.Join(d.Src, "python/app.py")}
	case svcNode:
		argv = []string{"node", "--require", "@opentelemetry/auto-instrumentations-node/register", filepath.Join(d.Src, "node/app.js")}
	case svcJava:
		argv = []string{"java", "-javaagent:" + filepath.Join(d.Build, "java/opentelemetry-javaagent.jar"), "-cp", filepath.Join(d.Build, "java/classes"), "App"}
	case svcGo:
		argv = []string{filepath.Join(d.Build, "goservice")}
	default:
		t.Fatalf("unknown service %q", spec.Name)
	}
	if spec.Faketime != "" {
		argv = append([]string{"faketime", "-f", spec.Faketime}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	base := map[string]string{
		"OTEL_SERVICE_NAME":                  spec.Name,
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": proxyURL,
		"OTEL_EXPORTER_OTLP_PROTOCOL":        "http/protobuf",
		"OTEL_TRACES_EXPORTER":               "otlp",
		"OTEL_METRICS_EXPORTER":              "none",
		"OTEL_LOGS_EXPORTER":                 "none",
		"REALAPPS_PORT":                      fmt.Sprint(spec.Port),
	}
	if spec.Delay > 0 {
		base["OTEL_BSP_SCHEDULE_DELAY"] = fmt.Sprint(spec.Delay)
	}
	if spec.Name == svcNode {
		// The service's script lies in tests/realapps/node; its packages in build/realapps/node.
		base["NODE_PATH"] = filepath.Join(d.Build, "node/node_modules")
		cmd.Dir = filepath.Join(d.Build, "node")
	}
	for k, v := range env {
		base[k] = v
	}
	cmd.Env = environWithout(os.Environ(), "OTEL_", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS", "FAKETIME", "LD_PRELOAD")
	for k, v := range base {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logPath := filepath.Join(t.TempDir(), spec.Name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("%s: log: %v", spec.Name, err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start %v: %v", spec.Name, argv, err)
	}
	s := &service{spec: spec, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(s.done) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s log (tail):\n%s", spec.Name, b)
		}
	})
	return s
}

func environWithout(env []string, prefixes ...string) []string {
	var out []string
next:
	for _, e := range env {
		for _, p := range prefixes {
			if strings.HasPrefix(e, p) {
				continue next
			}
		}
		out = append(out, e)
	}
	return out
}

// waitListening waits (bounded) until the service accepts TCP connections; no HTTP request
// is made, so readiness leaves no spans.
func (s *service) waitListening(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	addr := fmt.Sprintf("127.0.0.1:%d", s.spec.Port)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			t.Fatalf("%s exited before listening on %s (log %s)", s.spec.Name, addr, s.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening on %s after %v (log %s)", s.spec.Name, addr, timeout, s.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGTERM to the service's process group (the SDK flushes on it), waits up to
// 15 s, then kills the group.
func (s *service) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	pgid := s.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-s.done
	}
}

// startPlainEndpoint serves GET /plain with no SDK at all (the uninstrumented callee).
func startPlainEndpoint(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("plain endpoint: %v", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("plain\n"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}
