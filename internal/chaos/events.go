package main

import (
	"encoding/json"
	"slices"
	"sync"
	"time"
)

// event is one line of a worker's JSON log that names an export event
// ("claimed", "complete", "handed_back", "fenced", "retry", ...).
type event struct {
	At      time.Time // the log line's own time
	Worker  string    // the harness's name of the worker process
	Kind    string    // the line's "event" field
	Export  string    // the line's "export_id" field
	Fence   int64
	Attempt int64
	Line    string // the raw line, for evidence
}

// parseEvent decodes a worker log line; ok is false for lines that name
// no export event.
func parseEvent(worker string, line []byte) (event, bool) {
	var m struct {
		Time     time.Time `json:"time"`
		Event    string    `json:"event"`
		ExportID string    `json:"export_id"`
		Fence    int64     `json:"fence"`
		Attempt  int64     `json:"attempt"`
	}
	if json.Unmarshal(line, &m) != nil || m.Event == "" || m.ExportID == "" {
		return event{}, false
	}
	if m.Time.IsZero() {
		m.Time = time.Now()
	}
	return event{At: m.Time, Worker: worker, Kind: m.Event, Export: m.ExportID,
		Fence: m.Fence, Attempt: m.Attempt, Line: string(line)}, true
}

// tracker keeps every export event of every worker, per export, in time
// order. It is how the harness knows which worker runs which export, and
// when an export was resumed.
type tracker struct {
	mu sync.Mutex
	by map[string][]event
}

func newTracker() *tracker { return &tracker{by: map[string][]event{}} }

func (t *tracker) add(e event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	evs := t.by[e.Export]
	i := len(evs)
	for i > 0 && evs[i-1].At.After(e.At) {
		i--
	}
	t.by[e.Export] = slices.Insert(evs, i, e)
}

// of returns the events of export id, oldest first.
func (t *tracker) of(id string) []event {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.by[id])
}

// runningOn returns those of ids whose latest event is a claim by worker:
// the exports that worker is copying now, as far as its log says.
func (t *tracker) runningOn(worker string, ids []string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, id := range ids {
		evs := t.by[id]
		if n := len(evs); n > 0 && evs[n-1].Kind == "claimed" && evs[n-1].Worker == worker {
			out = append(out, id)
		}
	}
	return out
}

// first returns the first event of export id at or after since for which
// ok holds.
func (t *tracker) first(id string, since time.Time, ok func(event) bool) (event, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.by[id] {
		if !e.At.Before(since) && ok(e) {
			return e, true
		}
	}
	return event{}, false
}
