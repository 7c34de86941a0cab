package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestChaosShortRound runs one short round of the harness: a SIGKILL blow
// and a SIGTERM blow on worker processes, a few exports each, every
// export checked byte for byte. The SIGKILL blow alone takes over a
// minute: asynq recovers a dead worker's task only once its lease lapsed
// 30 s and another 30 s went by.
func TestChaosShortRound(t *testing.T) {
	if testing.Short() {
		t.Skip("the chaos round takes about two minutes")
	}
	cfg := DefaultConfig()
	cfg.Kinds = []Kind{KindKill, KindTerm}
	cfg.Exports = 6
	cfg.MaxSize = 3 << 20
	cfg.Seed = uint64(time.Now().UnixNano())
	cfg.Out = &testWriter{t: t}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	sum, err := Run(ctx, cfg)
	var table bytes.Buffer
	sum.Table(&table)
	t.Logf("%s\nround took %v", table.String(), time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("harness: %v (seed %d)", err, cfg.Seed)
	}
	if len(sum.Blows) != 2 {
		t.Fatalf("%d blows dealt, want 2", len(sum.Blows))
	}
	for _, bad := range sum.Bad() {
		t.Errorf("seed %d: %s", cfg.Seed, bad)
	}
	for _, r := range sum.Blows {
		if len(r.Affected) == 0 {
			t.Errorf("blow %d (%s): the victim ran no export when the blow fell", r.N, r.Kind)
		}
		if r.Failed > 0 {
			t.Errorf("blow %d (%s): %d exports FAILED; a worker's crash or shutdown must not fail an export", r.N, r.Kind, r.Failed)
		}
		if r.Complete == 0 {
			t.Errorf("blow %d (%s): no export completed", r.N, r.Kind)
		}
		for _, n := range r.Notes {
			if strings.Contains(n, "not claimed by another worker") || strings.Contains(n, "no event from") {
				t.Errorf("blow %d (%s): %s", r.N, r.Kind, n)
			}
		}
		if r.Kind == KindTerm {
			for _, d := range r.Resumes {
				if d > 5*time.Second {
					t.Errorf("SIGTERM blow: an export was resumed %v after the signal, want within seconds", d)
				}
			}
		}
	}
}

// testWriter sends the harness's progress lines to the test log.
type testWriter struct {
	mu sync.Mutex
	t  *testing.T
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
