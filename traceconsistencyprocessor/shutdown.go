package traceconsistencyprocessor // import "github.com/traceconsistency/traceconsistency/traceconsistencyprocessor"

// Shutdown: the release loop stops, what is still buffered is released (reason shutdown) or
// handed off within shutdown_timeout, and the engine is freed once no call uses it; what
// cannot be delivered in time is counted as lost, or stays in the write-ahead log.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.uber.org/zap"
)

// shutdownGrace is how long Shutdown still waits, after its deadline cancelled every call to
// the next consumer, for in-flight batches to return before it gives up freeing the engine.
const shutdownGrace = time.Second

// Shutdown stops the release loop, releases everything still buffered (reason shutdown) to
// the next consumer within ctx, or hands it off (handoff.on_shutdown), and frees the engine. Safe without Start and when repeated.
func (p *tracesProcessor) Shutdown(ctx context.Context) error {
	var err error
	p.shutdownOnce.Do(func() { err = p.shutdown(ctx) })
	return err
}

func (p *tracesProcessor) shutdown(ctx context.Context) error {
	defer p.tb.Shutdown()
	defer p.cancelSend()
	if p.stop == nil {
		return nil // never started: no engine, no loop
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ShutdownTimeout)
	defer cancel()
	// When the deadline ends, every call to the next consumer made outside this function
	// (release loop, callers' releases) is cancelled, so nothing can hold the engine longer.
	stopSends := context.AfterFunc(ctx, p.cancelSend)
	defer stopSends()

	close(p.stop)
	select {
	case <-p.done:
	case <-ctx.Done():
		// The loop's call to the next consumer is cancelled by now; give it a moment to
		// return (its release is then counted as pending below).
		grace := time.NewTimer(shutdownGrace)
		defer grace.Stop()
		select {
		case <-p.done:
		case <-grace.C:
			// Stuck in a next consumer that ignores cancellation: freeing the engine under
			// it is not safe.
			p.logLeftAtShutdown(context.Background(), ctx.Err())
			if p.keptInLog() {
				return nil // the engine is not freed under the call, but nothing is lost
			}
			return fmt.Errorf("traceconsistency shutdown: the release loop did not stop: %w", ctx.Err())
		}
	}

	var errs error
	p.mu.RLock()
	if _, err := p.eng.Shutdown(p.now()); err != nil {
		errs = errors.Join(errs, err)
	}
	errs = errors.Join(errs, p.drainAll(ctx, "traceconsistency shutdown", p.keptInLog()))
	p.mu.RUnlock()

	// Free the engine once no ConsumeTraces call uses it any more. Calls that ingested
	// after the sweep had their spans released at once: pass them on first.
	locked := make(chan struct{})
	go func() {
		p.mu.Lock()
		close(locked)
	}()
	select {
	case <-locked:
	case <-ctx.Done():
		// Every call to the next consumer is cancelled by now; give in-flight batches a
		// moment to return before giving up on freeing the engine.
		grace := time.NewTimer(shutdownGrace)
		defer grace.Stop()
		select {
		case <-locked:
		case <-grace.C:
		}
	}
	select {
	case <-locked:
	default:
		p.logLeftAtShutdown(context.Background(), ctx.Err())
		go func() { <-locked; p.eng.Close(); p.eng = nil; p.mu.Unlock() }()
		if p.keptInLog() {
			return errs
		}
		return errors.Join(errs, fmt.Errorf("traceconsistency shutdown: waiting for in-flight batches: %w", ctx.Err()))
	}
	defer p.mu.Unlock()
	errs = errors.Join(errs, p.drainAll(ctx, "traceconsistency shutdown", p.keptInLog()))
	p.recordStats(context.Background())
	if ctx.Err() != nil {
		p.logLeftAtShutdown(context.Background(), ctx.Err())
	}
	p.eng.Close()
	p.eng = nil
	return errs
}

// keptInLog reports whether what a shutdown could not deliver stays in the write-ahead log
// for the next start: such a shutdown is not a failure (it returns no error for the
// deadline, and the collector does not exit with an error for it).
func (p *tracesProcessor) keptInLog() bool { return p.cfg.WAL.Directory != "" }

// drainAll passes on everything released, retrying refused releases after their backoff,
// until nothing is left or ctx ends (at shutdown, and between the steps of a replay); what
// names the caller in errors. With kept (a shutdown with a write-ahead log), what ctx's end
// leaves stays in the log for the next start, and the end is not an error. The caller holds
// p.mu.
func (p *tracesProcessor) drainAll(ctx context.Context, what string, kept bool) error {
	for {
		if err := p.drain(ctx, ctx, true); err != nil && ctx.Err() == nil && !consumererror.IsPermanent(err) {
			return err
		}
		if err := p.drainTo(p.handoff, ctx, ctx, true, 0); err != nil && ctx.Err() == nil {
			return err
		}
		if ctx.Err() != nil {
			if kept {
				return nil // logged by logLeftAtShutdown; replayed at the next start
			}
			return fmt.Errorf("%s: %w", what, ctx.Err())
		}
		pending, retryAt := p.send.waiting()
		if hp, hAt := p.handoff.waiting(); hp {
			if !pending || hAt.Before(retryAt) {
				retryAt = hAt
			}
			pending = true
		}
		if !pending {
			if s, err := p.eng.Stats(); err != nil || s.ReadySpans == 0 {
				return nil
			}
			continue
		}
		if err := p.sleep(ctx, retryAt.Sub(p.now())); err != nil {
			if kept {
				return nil
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		// The wait was the backoff: retry now.
		p.send.retryNow()
		p.handoff.retryNow()
	}
}

// logLeftAtShutdown counts and logs what could not be delivered before shutdown ended.
func (p *tracesProcessor) logLeftAtShutdown(ctx context.Context, cause error) {
	spans, traces := p.send.left()
	hs, ht := p.handoff.left()
	spans, traces = spans+hs, traces+ht
	if s, err := p.eng.Stats(); err == nil {
		spans += int(s.ReadySpans + s.BufferedSpans)
		traces += int(s.BufferedTraces)
	}
	if spans == 0 {
		return
	}
	if p.keptInLog() {
		p.logger.Warn("shutdown ended before these acknowledged spans could be delivered; they are not lost: they stay in the write-ahead log and are replayed at the next start",
			zap.Int("spans", spans), zap.Int("buffered_traces_and_pending_traces", traces),
			zap.String("wal.directory", p.cfg.WAL.Directory), zap.Error(cause))
		return
	}
	p.tb.ProcessorTraceconsistencySpansLost.Add(ctx, int64(spans), p.lostAttrs[lostShutdownTimeout])
	p.logger.Error("shutdown ended before these acknowledged spans could be delivered; they are lost",
		zap.Int("spans", spans), zap.Int("buffered_traces_and_pending_traces", traces), zap.Error(cause))
}
