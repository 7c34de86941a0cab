package exporter

import (
	"context"
	"errors"
	"fmt"

	"github.com/hibiken/asynq"

	"github.com/exportsvc/exportsvc/storage"
)

// CancelExport cancels a queued or running export. The user must own it or
// hold the admin permission. Once it returns success the export is
// CANCELLED, its data and staged source are deleted, and no byte is ever
// appended again: the state change is one atomic Redis step that every
// append checks. The asynq task is then deleted if it waits, or told to
// stop if it runs; a task that misses that signal stops at its next batch
// and removes itself. Cancelling a CANCELLED export succeeds again; a
// COMPLETE or FAILED one gives ErrNotCancellable.
func (e *Exporter) CancelExport(ctx context.Context, u User, id string) (Status, error) {
	rec, err := e.lookup(ctx, u, id)
	if err != nil {
		return Status{}, err
	}
	prev, after, err := e.store.Cancel(ctx, id)
	if err != nil {
		if st, ok := storage.IsState(err); ok {
			return Status{}, fmt.Errorf("%w: export %s is %s", ErrNotCancellable, id, st)
		}
		if errors.Is(err, storage.ErrNotFound) {
			return Status{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return Status{}, fmt.Errorf("exporter: cancelling export %s: %w", id, err)
	}
	if prev != storage.Cancelled {
		e.stopTask(rec.Queue, id, prev == storage.Pending)
	}
	e.log.Info("export cancelled", "event", "cancel", "export_id", id, "user", u.ID, "previous_state", string(prev))
	return statusOf(after), nil
}

// stopAsynqTask removes the export's task if it waits, or signals it if it
// runs. It is best effort: the status fence already holds, and a task that
// survives this ends itself when it next touches the export. A PENDING
// export's task is most likely running: signal first, so the handler stops
// as soon as it can, then delete it in case it was waiting for a retry.
func (e *Exporter) stopAsynqTask(queue, id string, running bool) {
	if running {
		e.signalTask(id)
	}
	err := e.inspector.DeleteTask(queue, id)
	switch {
	case err == nil, errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return
	}
	if !running {
		// DeleteTask refuses an active task: it was dequeued meanwhile.
		e.signalTask(id)
	}
}

func (e *Exporter) signalTask(id string) {
	if err := e.inspector.CancelProcessing(id); err != nil {
		e.log.Warn("could not signal the running export task; it stops at its next batch",
			"export_id", id, "error", err.Error())
	}
}
