package testkit

import (
	"sync"
	"testing"
	"time"

	"github.com/exportsvc/exportsvc/tasks"
)

// Events records handler events, for a worker.Config's EventHook.
type Events struct {
	mu     sync.Mutex
	events []tasks.Event
	cond   chan struct{} // closed and replaced on every event
}

// NewEvents returns an empty recorder.
func NewEvents() *Events { return &Events{cond: make(chan struct{})} }

// Hook records e; pass it as worker.Config.EventHook.
func (r *Events) Hook(e tasks.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	close(r.cond)
	r.cond = make(chan struct{})
	r.mu.Unlock()
}

// Of returns the events of one export, in order.
func (r *Events) Of(id string) []tasks.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []tasks.Event
	for _, e := range r.events {
		if e.ExportID == id {
			out = append(out, e)
		}
	}
	return out
}

// Wait returns the first event of export id of kind k, waiting up to d.
func (r *Events) Wait(t testing.TB, id string, k tasks.EventKind, d time.Duration) tasks.Event {
	t.Helper()
	deadline := time.After(d)
	for {
		r.mu.Lock()
		for _, e := range r.events {
			if e.ExportID == id && e.Kind == k {
				r.mu.Unlock()
				return e
			}
		}
		c := r.cond
		r.mu.Unlock()
		select {
		case <-c:
		case <-deadline:
			t.Fatalf("no %s event for export %s within %v; events: %v", k, id, d, r.Of(id))
		}
	}
}
