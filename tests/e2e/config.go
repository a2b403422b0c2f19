package e2e

// Collector configuration: free loopback addresses, the processor's YAML
// block, and the collector config the harness renders around it.

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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

// NoRestartWait is a knob for TraceConsistencyYAML that switches the HLC
// restart wait off: the tests send right after start, and the wait
// (hlc.max_offset, 500ms by default) would only slow them down.
const NoRestartWait = "hlc: {restart_strategy: none}"

// TraceConsistencyYAML returns the processors YAML for the traceconsistency
// processor with the given knobs, one "key: value" per line
// (e.g. "quiet_period: 200ms", NoRestartWait). It is the one YAML helper for
// the processor block.
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
