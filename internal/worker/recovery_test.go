package worker_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/internal/worker"
	"github.com/exportsvc/exportsvc/storage"
	"github.com/exportsvc/exportsvc/tasks"
)

var alice = exporter.User{ID: "alice", Permissions: []string{exporter.PermissionExport}}

func terminal(st exporter.Status) bool { return st.State.Terminal() }

func source(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestShutdownHandsTheExportBackWithoutSpendingARetry(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(4<<10))
	events := testkit.NewEvents()
	cfg := worker.Config{MaxRate: 512 << 10, EventHook: events.Hook, DelayedInterval: time.Second, TaskCheckInterval: 100 * time.Millisecond}
	w1 := worker.New(rdb, withLogger(cfg))
	if err := w1.Start(); err != nil {
		t.Fatal(err)
	}
	in := source(1 << 20) // two seconds at the rate
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitStatus(t, e, alice, st.ID, 5*time.Second, func(s exporter.Status) bool { return s.BytesCopied >= 200<<10 })

	stopAt := time.Now()
	w1.Shutdown() // what SIGTERM does in cmd/worker
	stopped := time.Since(stopAt)
	back := events.Wait(t, st.ID, tasks.EventHandedBack, time.Second)
	mid, _ := e.GetExportStatus(context.Background(), alice, st.ID)
	if mid.State != exporter.StatePending || mid.BytesCopied == 0 || mid.BytesCopied == int64(len(in)) {
		t.Fatalf("after the hand-back: %+v", mid)
	}
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(e.Queue(), st.ID)
	if err != nil || info.Retried != 0 || info.State == asynq.TaskStateArchived {
		t.Fatalf("handed-back task: %+v, %v; want not archived, 0 retries spent", info, err)
	}

	testkit.StartWorker(t, rdb, cfg) // another worker, with cmd/worker's 1 s forwarding
	claim := waitEvent(t, events, st.ID, tasks.EventClaimed, 2, 5*time.Second)
	end := testkit.WaitStatus(t, e, alice, st.ID, 10*time.Second, terminal)
	if end.State != exporter.StateComplete || end.Attempts != 2 || !bytes.Equal(testkit.Download(t, e, alice, st.ID), in) {
		t.Fatalf("after the resume: %+v", end)
	}
	testkit.AssertTTLs(t, rdb)
	t.Logf("shutdown took %v; the second worker resumed the export %v after the hand-back, at byte %d",
		stopped.Round(time.Millisecond), claim.At.Sub(back.At).Round(time.Millisecond), mid.BytesCopied)
}

// waitEvent waits for the nth event of kind k of export id.
func waitEvent(t *testing.T, ev *testkit.Events, id string, k tasks.EventKind, nth int, within time.Duration) tasks.Event {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		n := 0
		for _, e := range ev.Of(id) {
			if e.Kind == k {
				if n++; n == nth {
					return e
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event #%d for %s within %v: %v", k, nth, id, within, ev.Of(id))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func withLogger(cfg worker.Config) worker.Config {
	cfg.TaskCheckInterval = max(cfg.TaskCheckInterval, 10*time.Millisecond)
	cfg.Logger = testkit.Logger()
	return cfg
}

func TestAHandBackWithNoRetryLeftIsRequeuedByTheSweeper(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(4<<10), exporter.WithMaxRetry(0))
	events := testkit.NewEvents()
	cfg := worker.Config{MaxRate: 512 << 10, EventHook: events.Hook, SweepInterval: 200 * time.Millisecond}
	w1 := worker.New(rdb, withLogger(cfg))
	if err := w1.Start(); err != nil {
		t.Fatal(err)
	}
	in := source(512 << 10)
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitStatus(t, e, alice, st.ID, 5*time.Second, func(s exporter.Status) bool { return s.BytesCopied > 0 })
	w1.Shutdown()
	// With no retry left asynq archives a handed-back task.
	insp := asynq.NewInspectorFromRedisClient(rdb)
	if info, err := insp.GetTaskInfo(e.Queue(), st.ID); err != nil || info.State != asynq.TaskStateArchived {
		t.Fatalf("task after the hand-back: %+v, %v; want archived", info, err)
	}
	testkit.StartWorker(t, rdb, cfg)
	end := testkit.WaitStatus(t, e, alice, st.ID, 10*time.Second, terminal)
	if end.State != exporter.StateComplete || !bytes.Equal(testkit.Download(t, e, alice, st.ID), in) {
		t.Fatalf("after the sweep: %+v", end)
	}
	testkit.AssertTTLs(t, rdb)
}

// failScripts makes every export script of one export fail with a
// connection error, as a flaky network would, except the one that records
// the failure.
type failScripts struct {
	statusKey string
	mu        sync.Mutex
	failed    int
}

func (f *failScripts) DialHook(next redis.DialHook) redis.DialHook { return next }
func (f *failScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (f *failScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if name := strings.ToLower(cmd.Name()); (name == "evalsha" || name == "eval") && len(args) > 3 && args[3] == f.statusKey {
			for _, a := range args {
				if s, ok := a.(string); ok && strings.Contains(s, "retries exhausted") {
					return next(ctx, cmd)
				}
			}
			f.mu.Lock()
			f.failed++
			f.mu.Unlock()
			err := errors.New("read tcp 127.0.0.1:6379: connection reset by peer (injected)")
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

func TestAnExportFailsWithTheLastErrorWhenRetriesAreSpent(t *testing.T) {
	srv := testkit.StartRedis(t)
	callers := srv.Client(t)
	e := testkit.NewExporter(t, callers, exporter.WithMaxRetry(2))
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(source(100<<10)))
	if err != nil {
		t.Fatal(err)
	}
	workers := srv.Client(t)
	hook := &failScripts{statusKey: storage.KeysFor(st.ID).Status}
	workers.AddHook(hook)
	events := testkit.NewEvents()
	testkit.StartWorker(t, workers, worker.Config{EventHook: events.Hook})
	end := testkit.WaitStatus(t, e, alice, st.ID, 30*time.Second, terminal) // backoff: about 1 s, then 2 s
	if end.State != exporter.StateFailed || !strings.Contains(end.Error, "retries exhausted (2)") || !strings.Contains(end.Error, "connection reset") {
		t.Fatalf("final status %+v, want FAILED with the last error", end)
	}
	if hook.failed != 3 {
		t.Fatalf("%d attempts failed, want 3 (the first and two retries)", hook.failed)
	}
	k := storage.KeysFor(st.ID)
	if n := callers.Exists(context.Background(), k.Source, k.Data).Val(); n != 0 {
		t.Fatal("source or data kept after FAILED")
	}
	info, err := asynq.NewInspectorFromRedisClient(callers).GetTaskInfo(e.Queue(), st.ID)
	if err != nil || info.State != asynq.TaskStateArchived {
		t.Fatalf("task of the failed export: %+v, %v; want archived for operators", info, err)
	}
	testkit.AssertTTLs(t, callers)
}

func TestAFullRedisFailsTheExportAtOnceAndFreesItsMemory(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(16<<10))
	events := testkit.NewEvents()
	testkit.StartWorker(t, rdb, worker.Config{MaxRate: 1 << 20, EventHook: events.Hook})
	st, err := e.StartExport(ctx, alice, bytes.NewReader(source(2<<20)))
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitStatus(t, e, alice, st.ID, 5*time.Second, func(s exporter.Status) bool { return s.BytesCopied > 0 })
	// Redis is full: maxmemory far below what it holds. Under noeviction
	// every script whose first write grows memory is refused from now on.
	if err := rdb.ConfigSet(ctx, "maxmemory", "1mb").Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.ConfigSet(context.Background(), "maxmemory", "0") })
	end := testkit.WaitStatus(t, e, alice, st.ID, 5*time.Second, terminal)
	if end.State != exporter.StateFailed || !strings.Contains(end.Error, "OOM") || end.Attempts != 1 {
		t.Fatalf("final status %+v, want FAILED for OOM after one attempt", end)
	}
	for _, ev := range events.Of(st.ID) {
		if ev.Kind == tasks.EventRetry {
			t.Fatalf("an OOM was retried: %v", events.Of(st.ID))
		}
	}
	k := storage.KeysFor(st.ID)
	if n := rdb.Exists(ctx, k.Source, k.Data).Val(); n != 0 {
		t.Fatal("source or data kept after an OOM failure: the memory was not freed")
	}
	testkit.AssertTTLs(t, rdb)
}

func TestAnExportSurvivesARedisRestart(t *testing.T) {
	srv := testkit.StartRedis(t, "--appendonly", "yes", "--appendfsync", "always")
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(8<<10))
	testkit.StartWorker(t, rdb, worker.Config{MaxRate: 512 << 10})
	in := source(1 << 20)
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitStatus(t, e, alice, st.ID, 5*time.Second, func(s exporter.Status) bool { return s.BytesCopied >= 128<<10 })
	srv.Restart(t) // SIGKILL, then the same port and AOF
	end := testkit.WaitStatus(t, e, alice, st.ID, 60*time.Second, terminal)
	if end.State != exporter.StateComplete || !bytes.Equal(testkit.Download(t, e, alice, st.ID), in) {
		t.Fatalf("after the restart: %+v", end)
	}
	testkit.AssertTTLs(t, rdb)
	t.Logf("completed after %d attempts", end.Attempts)
}

func TestTheEvictionPolicyIsChecked(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	worker.CheckEviction(context.Background(), rdb, log)
	if buf.Len() != 0 {
		t.Fatalf("noeviction gave a log line: %s", buf.String())
	}
	rdb.ConfigSet(context.Background(), "maxmemory-policy", "allkeys-lru")
	worker.CheckEviction(context.Background(), rdb, log)
	if out := buf.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "allkeys-lru") || !strings.Contains(out, "noeviction") {
		t.Fatalf("allkeys-lru: log %q, want a warning naming the policy and the fix", out)
	}
	buf.Reset()
	_, mini := testkit.Mini(t)
	worker.CheckEviction(context.Background(), mini, log)
	if out := buf.String(); !strings.Contains(out, "level=DEBUG") || !strings.Contains(out, "CONFIG") {
		t.Fatalf("miniredis: log %q, want a debug line saying CONFIG is unavailable", out)
	}
}
