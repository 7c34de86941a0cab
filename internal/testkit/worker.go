package testkit

import (
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/internal/worker"
)

// Logger returns a logger that writes to stderr when TESTLOG is set and
// nowhere otherwise.
func Logger() *slog.Logger {
	var w io.Writer = io.Discard
	if os.Getenv("TESTLOG") != "" {
		w = os.Stderr
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// StartWorker starts an in-process worker on rdb with test-friendly
// intervals (10 ms queue polls, 100 ms retry forwarding) unless cfg sets
// them, and shuts it down when the test ends.
func StartWorker(t testing.TB, rdb redis.UniversalClient, cfg worker.Config) *worker.Worker {
	t.Helper()
	if cfg.TaskCheckInterval == 0 {
		cfg.TaskCheckInterval = 10 * time.Millisecond
	}
	if cfg.DelayedInterval == 0 {
		cfg.DelayedInterval = 100 * time.Millisecond
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 200 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger()
	}
	w := worker.New(rdb, cfg)
	if err := w.Start(); err != nil {
		t.Fatalf("starting worker: %v", err)
	}
	t.Cleanup(w.Shutdown)
	return w
}
