//go:build cgo

package traceconsistencyprocessor

// Go fuzz targets (see FUZZING.md). Their seed corpora (f.Add below, and
// testdata/fuzz/<Name>/ when a run saved a finding) run in every ordinary `go test`; fuzz with
//
//	go test -run '^$' -fuzz FuzzConfig -fuzztime 30s .
//	go test -run '^$' -fuzz FuzzConsumeTraces -fuzztime 30s .

import (
	"context"
	"encoding/binary"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"gopkg.in/yaml.v3"
)

// configKeys lists every mapstructure key of Config, as dotted paths and as leaf names.
func configKeys(t reflect.Type, prefix string, out map[string]bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		parts := strings.Split(f.Tag.Get("mapstructure"), ",")
		tag := parts[0]
		if f.Anonymous && slices.Contains(parts[1:], "squash") {
			configKeys(f.Type, prefix, out) // its keys are its parent's
			continue
		}
		if tag == "" || tag == "-" {
			continue
		}
		out[tag] = true
		out[prefix+tag] = true
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			configKeys(f.Type, prefix+tag+".", out)
		}
	}
}

// FuzzConfig: arbitrary YAML maps unmarshal into Config and Validate never panics, and every
// error names a key of the configuration.
func FuzzConfig(f *testing.F) {
	for _, s := range []string{
		"",
		"num_shards: 4\nquiet_period: 1s\nidle_timeout: 10s\nmax_age: 60s\n",
		"quiet_period: -1s\n",
		"max_buffered_spans: 0\n",
		"max_spans_per_trace: 99999999999999\n",
		"late_spans:\n  policy: bogus\n  cache_size: -3\n",
		"duplicates:\n  conflict_policy: keep_latest\n",
		"checks:\n  disabled: [clock_skew, nope]\n  skew_correction:\n    enabled: true\n    max_adjustment: 0s\n",
		"hlc:\n  enabled: true\n  restart_strategy: persist\n",
		"hlc:\n  restart_strategy: persist\n  state_file: \"\\xff\"\n",
		"hlc: 3\n",
		"unknown_key: 1\n",
		"release_tick: 0s\nshutdown_timeout: -5s\nmax_release_batch_spans: -1\n",
		"num_shards: 100000\n",
		"max_age: 9223372036854775807ns\n",
	} {
		f.Add([]byte(s))
	}
	keys := map[string]bool{}
	configKeys(reflect.TypeOf(Config{}), "", keys)
	namesKey := func(msg string) bool {
		for k := range keys {
			if strings.Contains(msg, k) {
				return true
			}
		}
		return false
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var raw map[string]any
		if yaml.Unmarshal(b, &raw) != nil {
			return // not a YAML map: the collector's config loader refuses it before us
		}
		// An unknown key is named as confmap sees it: the input's own keys, each joined to
		// its parent's path with confmap's delimiter "::" and split at it again (a key
		// ending in ":" followed by a nested key forms a "::" of its own), count as names
		// too; non-string keys of nested maps are named by their text.
		given := map[string]bool{}
		hasEmpty := false
		var walk func(prefix string, m map[string]any)
		walk = func(prefix string, m map[string]any) {
			for k, v := range m {
				path := k
				if prefix != "" {
					path = prefix + "::" + k
				}
				for _, seg := range strings.Split(path, "::") {
					if seg == "" {
						hasEmpty = true
					} else {
						given[seg] = true
					}
				}
				switch sub := v.(type) {
				case map[string]any:
					walk(path, sub)
				case map[any]any:
					conv := make(map[string]any, len(sub))
					for sk, sv := range sub {
						conv[fmt.Sprint(sk)] = sv
					}
					walk(path, conv)
				}
			}
		}
		walk("", raw)
		namesKey := func(msg string) bool {
			if namesKey(msg) {
				return true
			}
			for k := range given {
				if strings.Contains(msg, k) {
					return true
				}
			}
			// An empty key ("": 1, or "::" — confmap's key delimiter — as in YAML ":::") is
			// named as the empty string.
			return hasEmpty && strings.Contains(msg, "invalid keys")
		}
		cfg := createDefaultConfig().(*Config)
		if err := confmap.NewFromStringMap(raw).Unmarshal(cfg); err != nil {
			require.True(t, namesKey(err.Error()), "unmarshal error names no key: %v", err)
			return
		}
		if err := cfg.Validate(); err != nil {
			require.True(t, namesKey(err.Error()), "validation error names no key: %v", err)
		}
	})
}

// counter sums an int64 counter of the processor's telemetry (0 when never recorded).
func counter(t *testing.T, h *harness, name string) int64 {
	m, err := h.tel.GetMetric(name)
	if err != nil {
		return 0
	}
	var n int64
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		n += dp.Value
	}
	return n
}

// FuzzConsumeTraces: pdata built from fuzzed inputs (span counts, IDs, times, nesting,
// exact re-sends) through the processor into a consumertest sink: after shutdown every
// span accepted comes out exactly once, minus counted duplicates and conflicts; a batch is
// refused only for attribute nesting at pdata's limit (100 levels).
func FuzzConsumeTraces(f *testing.F) {
	f.Add([]byte{3, 1, 1, 0, 10, 20, 1, 2, 1, 11, 19, 1, 3, 1, 12, 18}, uint8(0), false)
	f.Add([]byte{8, 0, 1, 0, 0, 0, 0, 1, 2, 0xff, 0xff, 0, 1, 1, 5, 5}, uint8(49), true)
	f.Add([]byte{5, 2, 1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 3, 0, 9}, uint8(50), false)
	f.Add(make([]byte, 64), uint8(0), true)
	f.Fuzz(func(t *testing.T, b []byte, nesting uint8, keepLatest bool) {
		if len(b) > 4096 {
			return
		}
		h := newHarness(t, func(c *Config) {
			c.MaxBufferedSpans = 50
			c.MaxSpansPerTrace = 7
			if keepLatest {
				c.Duplicates.ConflictPolicy = "keep_latest"
			}
		})
		var sent, refused int
		deepLevel := 0 // level of the "deep" attribute once added (re-sends copy it)
		// Records of 5 bytes: trace, span id, parent, start, end; the first byte of a batch
		// gives its span count, and a record whose trace byte has bit 7 set re-sends the
		// previous span (an exporter retry).
		var prev *ptrace.Span
		for len(b) > 0 {
			n := int(b[0]%16) + 1
			b = b[1:]
			td := ptrace.NewTraces()
			rs := td.ResourceSpans().AppendEmpty()
			rs.Resource().Attributes().PutStr("service.name", "fuzz")
			ss := rs.ScopeSpans().AppendEmpty().Spans()
			for i := 0; i < n && len(b) >= 5; i++ {
				r := b[:5]
				b = b[5:]
				sp := ss.AppendEmpty()
				if r[0]&0x80 != 0 && prev != nil {
					prev.CopyTo(sp)
					continue
				}
				tid := pcommon.TraceID{}
				if r[0]&0x7f != 0 { // 0: the all-zero (invalid) trace ID
					tid = traceID(r[0] % 5)
				}
				sp.SetTraceID(tid)
				if r[1] != 0 {
					sp.SetSpanID(spanID(r[1] % 9))
				}
				if r[2]%9 != 0 {
					sp.SetParentSpanID(spanID(r[2] % 9))
				}
				sp.SetName("op-" + string(rune('a'+r[1]%26)))
				start := binary.BigEndian.Uint16([]byte{r[3], r[4]})
				sp.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(-time.Duration(r[3]) * time.Millisecond)))
				sp.SetEndTimestamp(pcommon.Timestamp(uint64(pcommon.NewTimestampFromTime(t0)) + uint64(start)))
				if r[4] == 0xff {
					sp.SetEndTimestamp(pcommon.Timestamp(^uint64(0)))
				}
				p := sp
				prev = &p
			}
			if ss.Len() == 0 {
				continue
			}
			if nesting > 0 && ss.Len() > 0 {
				// nesting arrays: the deepest value sits at level 2*nesting+1.
				s := ss.At(0).Attributes().PutEmptySlice("deep")
				for i := 1; i < int(nesting%60); i++ {
					s = s.AppendEmpty().SetEmptySlice()
				}
				s.AppendEmpty().SetInt(1)
				deepLevel = 2*int(max(nesting%60, 1)) + 1
				nesting = 0 // once
			}
			deep := false
			for i := 0; i < ss.Len(); i++ {
				if _, ok := ss.At(i).Attributes().Get("deep"); ok && deepLevel >= 100 {
					deep = true
				}
			}
			spans := td.SpanCount()
			err := h.p.ConsumeTraces(context.Background(), td)
			if deep {
				require.Error(t, err, "nesting at pdata's limit must be refused")
				refused += spans
				continue
			}
			require.NoError(t, err)
			sent += spans
			if b0 := len(b); b0%3 == 0 {
				h.tick(time.Duration(b0%7) * 300 * time.Millisecond)
			}
		}
		require.NoError(t, h.p.Shutdown(context.Background()))
		got := h.sink.SpanCount()
		dups := counter(t, h, "otelcol_processor_traceconsistency_duplicates_dropped")
		conflicts := counter(t, h, "otelcol_processor_traceconsistency_conflicts_dropped")
		require.Equal(t, int64(sent)-dups-conflicts, int64(got),
			"sent %d (refused %d), out %d, duplicates %d, conflicts %d", sent, refused, got, dups, conflicts)
	})
}
