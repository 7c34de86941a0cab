package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/exportsvc/exportsvc/storage"
)

// DefaultBatchBytes is how many bytes one append script moves at most. A
// batch is the unit of progress and the longest a cancel or a shutdown
// waits for the handler: about a millisecond of Redis time.
const DefaultBatchBytes = 1 << 20

// Handler runs export tasks: it claims the export, moves the staged chunks
// into the data batch by batch under the claim's fence token, and ends the
// export COMPLETE, or FAILED on a permanent error. Build one with
// NewHandler; it is safe for concurrent use.
type Handler struct {
	store      *storage.Store
	log        *slog.Logger
	maxRate    int64
	batchBytes int64
	hook       func(Event)

	stopOnce sync.Once
	stopping chan struct{}
	running  sync.WaitGroup
}

// HandlerOption configures a Handler.
type HandlerOption func(*Handler)

// WithLogger sets the handler's logger (default slog.Default()).
func WithLogger(l *slog.Logger) HandlerOption { return func(h *Handler) { h.log = l } }

// WithMaxRate limits each export to bytesPerSecond (0, the default, is no
// limit). It protects a shared Redis, and makes demos watchable.
func WithMaxRate(bytesPerSecond int64) HandlerOption {
	return func(h *Handler) { h.maxRate = max(bytesPerSecond, 0) }
}

// WithBatchBytes sets how many bytes one append moves at most (default
// DefaultBatchBytes; at least one chunk).
func WithBatchBytes(n int64) HandlerOption {
	return func(h *Handler) {
		if n > 0 {
			h.batchBytes = n
		}
	}
}

// NewHandler returns a handler that runs exports kept in store.
func NewHandler(store *storage.Store, opts ...HandlerOption) *Handler {
	h := &Handler{store: store, log: slog.Default(), batchBytes: DefaultBatchBytes, stopping: make(chan struct{})}
	for _, o := range opts {
		o(h)
	}
	return h
}

// Shutdown asks every running export to stop at its next batch boundary
// and hand its task back (ErrShutdown: no retry spent, no delay). Call it
// when the worker is told to stop, before asynq's Server.Shutdown, which
// would otherwise wait for its ShutdownTimeout before cancelling anything.
func (h *Handler) Shutdown() { h.stopOnce.Do(func() { close(h.stopping) }) }

// Wait blocks until no ProcessTask call is running. asynq stops waiting for
// a handler whose context is cancelled; Wait lets the worker close its
// Redis client only once every handler has returned.
func (h *Handler) Wait() { h.running.Wait() }

// ProcessTask runs one attempt of an export task. It implements
// asynq.Handler.
func (h *Handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	h.running.Add(1)
	defer h.running.Done()

	p, err := ParsePayload(t.Payload())
	if err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	r := &run{h: h, id: p.ExportID, log: h.log.With("export_id", p.ExportID), start: time.Now()}
	r.retry, _ = asynq.GetRetryCount(ctx)
	r.maxRetry, _ = asynq.GetMaxRetry(ctx)
	return r.process(ctx)
}

// run is one attempt of one export.
type run struct {
	h               *Handler
	id              string
	log             *slog.Logger
	start           time.Time
	retry, maxRetry int
	fence           int64
	bytes           int64 // copied in all, as of the last batch
}

func (r *run) process(ctx context.Context) error {
	select {
	case <-r.h.stopping:
		return ErrShutdown
	default:
	}
	batch := r.h.batchBytes
	if r.h.maxRate > 0 {
		batch = max(1, min(batch, r.h.maxRate/10)) // about ten batches a second
	}
	pr, err := r.h.store.Claim(ctx, r.id, batch)
	r.fence = pr.Fence
	if err != nil {
		return r.refused(ctx, "claim", err)
	}
	r.log.Info("export claimed", "event", "claimed", "fence", pr.Fence, "chunks_copied", pr.Chunks, "retried", r.retry)
	r.emit(EventClaimed, pr.Bytes, nil)
	startBytes := pr.Bytes - pr.Moved // bytes of earlier attempts are not this one's work
	throttle := newThrottle(r.h.maxRate)
	for {
		r.bytes = pr.Bytes
		if pr.Complete {
			d := time.Since(r.start)
			r.log.Info("export complete", "event", "complete", "bytes", pr.Bytes, "chunks", pr.Chunks,
				"seconds", d.Seconds(), "mb_per_s", float64(pr.Bytes-startBytes)/1e6/max(d.Seconds(), 1e-9))
			r.emit(EventComplete, pr.Bytes, nil)
			return nil
		}
		throttle.wait(ctx, r.h.stopping, pr.Bytes-startBytes)
		select {
		case <-ctx.Done():
			return r.stopped(ctx)
		case <-r.h.stopping:
			r.log.Info("export handed back", "event", "handed_back", "chunks", pr.Chunks)
			r.emit(EventHandedBack, r.bytes, nil)
			return ErrShutdown
		default:
		}
		if pr, err = r.h.store.Append(ctx, r.id, r.fence, pr.Chunks, batch); err != nil {
			return r.refused(ctx, "append", err)
		}
	}
}

// stopped handles a cancelled or expired task context.
func (r *run) stopped(ctx context.Context) error {
	rec, err := r.h.store.Get(context.WithoutCancel(ctx), r.id)
	if err == nil && rec.State == storage.Cancelled {
		r.logCancel(rec, ctx.Err())
		return asynq.RevokeTask
	}
	r.log.Warn("export interrupted", "event", "interrupted", "reason", ctx.Err().Error())
	r.emit(EventRetry, r.bytes, ctx.Err())
	return ctx.Err()
}

// logCancel reports a cancel that stopped this attempt; how says how the
// handler learnt of it: its context (asynq's signal) or a refused append.
func (r *run) logCancel(rec storage.Record, how error) {
	l := r.log.With("event", "cancelled", "bytes", rec.Bytes)
	if !rec.FinishedAt.IsZero() {
		l = l.With("cancel_to_stop_ms", float64(time.Since(rec.FinishedAt).Microseconds())/1000)
	}
	via := "signal"
	if !errors.Is(how, context.Canceled) {
		via = "refused append"
	}
	l.Info("export cancelled, handler stopped", "via", via)
	r.emit(EventCancelled, rec.Bytes, how)
}

// refused decides what a refused or failed Redis step means for the task.
func (r *run) refused(ctx context.Context, step string, err error) error {
	if st, ok := storage.IsState(err); ok {
		// Someone else ended the export (a cancel, the sweeper, an earlier
		// attempt): nothing to write; the task removes itself.
		if st == storage.Cancelled && step != "claim" {
			// This attempt was running: the cancel stopped it.
			if rec, gerr := r.h.store.Get(context.WithoutCancel(ctx), r.id); gerr == nil {
				r.logCancel(rec, err)
			}
		} else {
			r.log.Info("export already ended, task revoked", "event", "revoked", "state", string(st), "step", step)
			r.emit(EventRevoked, r.bytes, err)
		}
		return asynq.RevokeTask
	}
	switch {
	case errors.Is(err, storage.ErrNotFound):
		r.log.Warn("export record gone (expired?), task revoked", "event", "revoked", "step", step)
		r.emit(EventRevoked, r.bytes, err)
		return asynq.RevokeTask
	case errors.Is(err, storage.ErrFenced):
		// A newer attempt owns the export: this worker lost its lease.
		r.log.Warn("export claimed by a newer attempt, stopping", "event", "fenced", "fence", r.fence, "step", step)
		r.emit(EventFenced, r.bytes, err)
		return fmt.Errorf("%s: %w", step, err)
	case ctx.Err() != nil:
		return r.stopped(ctx)
	case errors.Is(err, storage.ErrCorrupt), permanent(err):
		return r.fail(ctx, fmt.Sprintf("%s: %v", step, err), err)
	case r.retry >= r.maxRetry:
		return r.fail(ctx, fmt.Sprintf("%s: retries exhausted (%d): %v", step, r.maxRetry, err), err)
	}
	r.log.Warn("export attempt failed, will retry", "event", "retry", "step", step, "error", err.Error(), "retried", r.retry)
	r.emit(EventRetry, r.bytes, err)
	return fmt.Errorf("%s: %w", step, err)
}

// fail ends the export FAILED with reason and archives the task.
func (r *run) fail(ctx context.Context, reason string, cause error) error {
	if err := r.h.store.Fail(context.WithoutCancel(ctx), r.id, r.fence, reason); err != nil {
		r.log.Error("could not mark export failed", "event", "fail_error", "reason", reason, "error", err.Error())
		return fmt.Errorf("%s (marking it failed: %v): %w", reason, err, cause)
	}
	r.log.Error("export failed", "event", "failed", "reason", reason)
	r.emit(EventFailed, r.bytes, cause)
	return fmt.Errorf("%s: %w", reason, asynq.SkipRetry)
}
