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
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
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
