package metrics

import (
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/exportsvc/exportsvc/tasks"
)

func TestCountersServeThePrometheusTextFormat(t *testing.T) {
	var c Counters
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Observe(tasks.Event{Kind: tasks.EventClaimed})
			c.Observe(tasks.Event{Kind: tasks.EventComplete, Bytes: 100})
		}()
	}
	wg.Wait()
	c.Observe(tasks.Event{Kind: tasks.EventCancelled, Bytes: 7})

	rec := httptest.NewRecorder()
	c.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		"# TYPE export_events_total counter",
		`export_events_total{event="claimed"} 10`,
		`export_events_total{event="complete"} 10`,
		`export_events_total{event="cancelled"} 1`,
		`export_events_total{event="failed"} 0`,
		"export_completed_bytes_total 1000",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
}
