package tasks

import "time"

// EventKind names what happened to an export in a handler.
type EventKind string

// The events a handler reports.
const (
	EventClaimed    EventKind = "claimed"     // an attempt claimed the export
	EventComplete   EventKind = "complete"    // the last chunk landed
	EventCancelled  EventKind = "cancelled"   // the handler stopped for a cancel
	EventFailed     EventKind = "failed"      // the export ended FAILED
	EventHandedBack EventKind = "handed_back" // shutdown: the task goes back to the queue
	EventFenced     EventKind = "fenced"      // a newer attempt owns the export
	EventRetry      EventKind = "retry"       // a transient error: asynq retries
	EventRevoked    EventKind = "revoked"     // the export had ended: nothing to do
)

// Event is one thing that happened to an export in a handler; the handler
// reports it just before ProcessTask returns (or, for EventClaimed, once
// claimed). Hooks run on the handler's goroutine and must be quick.
type Event struct {
	Kind     EventKind
	ExportID string
	Attempt  int   // 1 for the first attempt
	Bytes    int64 // bytes copied in all, as far as this attempt knows
	At       time.Time
	Err      error // the reason of EventFailed and EventRetry; for EventCancelled, context.Canceled when asynq's signal stopped the handler, the refusal otherwise
}

// WithEventHook calls f for every event (for metrics and tests).
func WithEventHook(f func(Event)) HandlerOption { return func(h *Handler) { h.hook = f } }

func (r *run) emit(kind EventKind, bytes int64, err error) {
	if r.h.hook != nil {
		r.h.hook(Event{Kind: kind, ExportID: r.id, Attempt: r.retry + 1, Bytes: bytes, At: time.Now(), Err: err})
	}
}
