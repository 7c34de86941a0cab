// Package metrics counts what the worker's handlers report and serves the
// counts in the Prometheus text format, without a client library: a few
// counters need no more.
package metrics

import (
	"fmt"
	"net/http"
	"slices"
	"sync"

	"github.com/exportsvc/exportsvc/tasks"
)

// Counters counts handler events. The zero value is ready to use; it is
// safe for concurrent use.
type Counters struct {
	mu     sync.Mutex
	events map[tasks.EventKind]uint64
	bytes  uint64 // bytes of exports that reached COMPLETE
}

// Observe counts e; pass it as the worker's event hook.
func (c *Counters) Observe(e tasks.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.events == nil {
		c.events = make(map[tasks.EventKind]uint64)
	}
	c.events[e.Kind]++
	if e.Kind == tasks.EventComplete {
		c.bytes += uint64(max(e.Bytes, 0))
	}
}

// kinds are reported even before they happen, so that rates start at 0.
var kinds = []tasks.EventKind{
	tasks.EventClaimed, tasks.EventComplete, tasks.EventCancelled, tasks.EventFailed,
	tasks.EventHandedBack, tasks.EventFenced, tasks.EventRetry, tasks.EventRevoked,
}

// ServeHTTP writes the counters in the Prometheus text format.
func (c *Counters) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	c.mu.Lock()
	events := make(map[tasks.EventKind]uint64, len(c.events))
	for k, v := range c.events {
		events[k] = v
	}
	bytes := c.bytes
	c.mu.Unlock()

	names := slices.Clone(kinds)
	for k := range events {
		if !slices.Contains(names, k) {
			names = append(names, k)
		}
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintln(w, "# HELP export_events_total Export handler events by kind, since the worker started.")
	fmt.Fprintln(w, "# TYPE export_events_total counter")
	for _, k := range names {
		fmt.Fprintf(w, "export_events_total{event=%q} %d\n", string(k), events[k])
	}
	fmt.Fprintln(w, "# HELP export_completed_bytes_total Bytes of the exports this worker completed.")
	fmt.Fprintln(w, "# TYPE export_completed_bytes_total counter")
	fmt.Fprintf(w, "export_completed_bytes_total %d\n", bytes)
}
