package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Sample is one sample of the Prometheus text exposition format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is one scrape of a collector's Prometheus endpoint.
type Metrics struct {
	Samples []Sample
	Raw     string
}

// ParseMetrics parses the Prometheus text exposition format (comments and
// blank lines skipped). It accepts what the collector's Prometheus exporter
// writes: `name{label="value",...} value [timestamp]`, with \\, \" and \n
// escapes in label values.
func ParseMetrics(text string) (Metrics, error) {
	m := Metrics{Raw: text}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return Metrics{}, fmt.Errorf("metrics line %d %q: %w", n, line, err)
		}
		m.Samples = append(m.Samples, s)
	}
	return m, sc.Err()
}

func parseSample(line string) (Sample, error) {
	s := Sample{Labels: map[string]string{}}
	i := strings.IndexAny(line, "{ ")
	if i <= 0 {
		return s, fmt.Errorf("no metric name")
	}
	s.Name = line[:i]
	rest := line[i:]
	if rest[0] == '{' {
		rest = rest[1:]
		for {
			rest = strings.TrimLeft(rest, " ,")
			if rest == "" {
				return s, fmt.Errorf("unterminated labels")
			}
			if rest[0] == '}' {
				rest = rest[1:]
				break
			}
			eq := strings.IndexByte(rest, '=')
			if eq <= 0 || len(rest) < eq+2 || rest[eq+1] != '"' {
				return s, fmt.Errorf("bad label at %q", rest)
			}
			key := strings.TrimSpace(rest[:eq])
			rest = rest[eq+2:]
			var val strings.Builder
			closed := false
			for j := 0; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' && j+1 < len(rest) {
					j++
					switch rest[j] {
					case 'n':
						val.WriteByte('\n')
					default:
						val.WriteByte(rest[j])
					}
					continue
				}
				if c == '"' {
					rest = rest[j+1:]
					closed = true
					break
				}
				val.WriteByte(c)
			}
			if !closed {
				return s, fmt.Errorf("unterminated label value")
			}
			s.Labels[key] = val.String()
		}
	}
	fields := strings.Fields(rest)
	if len(fields) < 1 {
		return s, fmt.Errorf("no value")
	}
	v, err := strconv.ParseFloat(fields[0], 64)
	if err != nil {
		return s, fmt.Errorf("value: %w", err)
	}
	s.Value = v
	return s, nil
}

// names returns name and name_total: the Prometheus exporter may or may
// not add the _total suffix to counters.
func metricNames(name string) []string {
	return []string{name, name + "_total"}
}

func labelsMatch(have map[string]string, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		if have[want[i]] != want[i+1] {
			return false
		}
	}
	return true
}

// Find returns the samples of a metric (name or name_total) whose labels
// include the given key, value pairs.
func (m Metrics) Find(name string, labels ...string) []Sample {
	var out []Sample
	ns := metricNames(name)
	for _, s := range m.Samples {
		if slices.Contains(ns, s.Name) && labelsMatch(s.Labels, labels) {
			out = append(out, s)
		}
	}
	return out
}

// Has reports whether the metric has a sample with the given labels.
func (m Metrics) Has(name string, labels ...string) bool { return len(m.Find(name, labels...)) > 0 }

// Sum adds up the samples of a metric with the given labels (0 if none).
func (m Metrics) Sum(name string, labels ...string) float64 {
	var sum float64
	for _, s := range m.Find(name, labels...) {
		sum += s.Value
	}
	return sum
}

// LabelValues returns the distinct values of one label of a metric.
func (m Metrics) LabelValues(name, label string) []string {
	var out []string
	for _, s := range m.Find(name) {
		if v, ok := s.Labels[label]; ok && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// Grep returns the raw lines mentioning substr (for failure messages).
func (m Metrics) Grep(substr string) string {
	var b strings.Builder
	for _, line := range strings.Split(m.Raw, "\n") {
		if strings.Contains(line, substr) && !strings.HasPrefix(line, "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// ScrapeMetrics fetches and parses the collector's own metrics (bounded).
func (c *Collector) ScrapeMetrics() (Metrics, error) {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(c.MetricsURL)
	if err != nil {
		return Metrics{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return Metrics{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Metrics{}, fmt.Errorf("GET %s: status %d", c.MetricsURL, resp.StatusCode)
	}
	return ParseMetrics(string(body))
}

// WaitForMetrics scrapes every 50ms until cond holds or timeout passes
// (then it fails the test, describing what it waited for, with the
// traceconsistency lines of the last scrape).
func (c *Collector) WaitForMetrics(timeout time.Duration, what string, cond func(Metrics) bool) Metrics {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last Metrics
	var lastErr error
	for {
		m, err := c.ScrapeMetrics()
		if err == nil {
			last = m
			if cond(m) {
				return m
			}
		}
		lastErr = err
		if time.Now().After(deadline) {
			c.t.Fatalf("timed out after %v waiting for metrics: %s (last scrape error: %v); last scrape:\n%s",
				timeout, what, lastErr, last.Grep("otelcol_"))
		}
		if c.Exited() {
			c.t.Fatalf("collector exited while waiting for metrics: %s: %v", what, c.waitErr)
		}
		<-tick.C
	}
}

// RequireComponents skips the test (fails with E2E_REQUIRED=1) unless the
// binary has every named component, given as "kind/name", e.g.
// "exporters/load_balancing".
func RequireComponents(t testing.TB, bin string, comps ...string) {
	t.Helper()
	have, err := Components(bin)
	if err != nil {
		t.Fatalf("cannot list the components of %s: %v", bin, err)
	}
	var missing []string
	for _, c := range comps {
		kind, name, _ := strings.Cut(c, "/")
		if !slices.Contains(have[kind], name) {
			missing = append(missing, c)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("collector binary %s lacks components this test needs: %s; set %s=1 to make this a failure",
		bin, strings.Join(missing, ", "), EnvRequired)
	if Required() {
		t.Fatalf("%s=1: %s", EnvRequired, msg)
	}
	t.Skip(msg)
}
