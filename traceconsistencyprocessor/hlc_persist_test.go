//go:build cgo

package traceconsistencyprocessor

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumererror"

	"github.com/traceconsistency/traceconsistency/traceconsistencyprocessor/internal/engine"
)

func persistTo(path string) func(*Config) {
	return func(c *Config) {
		c.HLC.RestartStrategy = "persist"
		c.HLC.StateFile = path
	}
}

func TestPersistWaitsLikeWaitWhenTheStateFileIsMissingOrEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hlc.state")

	h := newHarness(t, persistTo(path))
	assert.Equal(t, []time.Duration{500 * time.Millisecond}, h.slept, "missing: waits hlc.max_offset")
	require.NoError(t, h.p.Shutdown(context.Background()))

	h = newHarness(t, persistTo(path))
	assert.Empty(t, h.slept, "a bound: resumes above it without waiting")
	require.NoError(t, h.p.Shutdown(context.Background()))

	require.NoError(t, os.WriteFile(path, nil, 0o600)) // what a crash can leave
	h = newHarness(t, persistTo(path))
	assert.Equal(t, []time.Duration{500 * time.Millisecond}, h.slept, "empty: waits hlc.max_offset")
}

func TestAStalledClockRefusesTheBatchWithARetryableError(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	require.NoError(t, os.Mkdir(dir, 0o700))
	h := newHarness(t, persistTo(filepath.Join(dir, "hlc.state")))
	// The state file can no longer be written, and the clock is past the bound written at
	// start (from the wall clock).
	require.NoError(t, os.RemoveAll(dir))
	d := time.Hour
	if n := time.Since(t0); n > 0 {
		d += n
	}
	h.clock.Advance(d)

	err := h.p.ConsumeTraces(context.Background(), makeTraces(threeSpanTrace(1)...))
	require.Error(t, err)
	assert.False(t, consumererror.IsPermanent(err), "the receiver answers UNAVAILABLE / 503")
	var ee *engine.Error
	require.ErrorAs(t, err, &ee)
	assert.Equal(t, engine.CodeClockStalled, ee.Code)
	assert.True(t, ee.Retryable())
	assert.Contains(t, err.Error(), "hlc.state_file")

	s, err := h.p.eng.Stats()
	require.NoError(t, err)
	assert.Equal(t, uint64(1), s.HLCStalledBatches)
	assert.Positive(t, s.HLCPersistErrors)
	assert.Zero(t, s.SpansReceived, "nothing of the batch kept")
	assert.Zero(t, s.BufferedSpans)

	// Once the file can be written, the retry goes through.
	require.NoError(t, os.Mkdir(dir, 0o700))
	h.consume(makeTraces(threeSpanTrace(1)...))
}
