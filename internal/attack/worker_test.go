package attack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/internal/worker"
	"github.com/exportsvc/exportsvc/storage"
	"github.com/exportsvc/exportsvc/tasks"
)

// A known limit of asynq, stated in docs/design.md: when the worker running
// an export was SIGKILLed, its task stays in asynq's active set after a
// cancel. DeleteTask refuses an active task and CancelProcessing has nobody
// to reach; asynq's recoverer moves the task only when its lease has lapsed
// (60 to ~170 s), and the next worker then revokes it at once. What must
// hold meanwhile is the data guarantee: the export stays CANCELLED, and
// no byte lands, even with a healthy worker serving the queue.
func TestCancelAfterTheWorkerWasKilledHolds(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(4<<10), exporter.WithQueue("killed"))
	w := testkit.StartWorkerProcess(t, "--redis", "redis://"+srv.Addr, "--queue", "killed", "--max-rate", "262144")
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(make([]byte, 4<<20)))
	if err != nil {
		t.Fatal(err)
	}
	waitChunks(t, e, st.ID, 4, 10*time.Second)
	w.Signal(t, syscall.SIGKILL)
	w.Wait(t, 5*time.Second)
	// A healthy worker serves the queue: the gap is not "no worker left".
	testkit.StartWorker(t, rdb, worker.Config{Queue: "killed"})

	ack, err := e.CancelExport(context.Background(), alice, st.ID)
	if err != nil || ack.State != exporter.StateCancelled {
		t.Fatalf("cancel: %+v, %v", ack, err)
	}
	k := storage.KeysFor(st.ID)
	if n := rdb.Exists(context.Background(), k.Data, k.Source).Val(); n != 0 {
		t.Fatal("data or source exists right after the cancel")
	}
	time.Sleep(3 * time.Second) // a healthy worker polls every 100 ms; the dead one's task stays active
	if s := testkit.TaskState(t, rdb, "killed", st.ID); s != "active" && s != "" {
		t.Fatalf("the killed worker's task is %s, want active (until asynq recovers it) or gone", s)
	}
	if n := rdb.Exists(context.Background(), k.Data, k.Source).Val(); n != 0 {
		t.Fatal("data or source came back after the cancel")
	}
	end, err := e.GetExportStatus(context.Background(), alice, st.ID)
	if err != nil || end.State != exporter.StateCancelled || end.BytesCopied != ack.BytesCopied {
		t.Fatalf("after the cancel: %+v, %v (at the acknowledgement: %+v)", end, err, ack)
	}
	testkit.AssertTTLs(t, rdb)
}

// Regression test (this was a bug, fixed): a batch is sized in bytes only, so with small chunks one append
// script runs for seconds. DESIGN.md and tasks.DefaultBatchBytes promise
// a batch is "about a millisecond of Redis time" and the longest a cancel
// waits; the claim/append script (storage/scripts.go, moveBatch) moves
// floor(batch_bytes / chunk_size) chunks, 1 Mi LMOVEs per script for
// 1-byte chunks, which exporter.New and the demo's --chunk-size accept.
// Measured here: about 1-2.5 s per script, during which Redis serves no
// one (other exports, cancels, asynq's heartbeats), close to go-redis's
// 3 s read timeout. Expected: a batch is bounded in chunks as well as in
// bytes (or New refuses chunk sizes that make it long).
func TestOneBatchIsAboutAMillisecondOfRedisTimeWhateverTheChunkSize(t *testing.T) {
	srv := testkit.StartRedis(t, "--slowlog-log-slower-than", "50000", "--slowlog-max-len", "1000")
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(1), exporter.WithQueue("tiny"))
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(randomBytes(1<<20, 7)))
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.SlowLogReset(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	testkit.StartWorker(t, rdb, worker.Config{Queue: "tiny"})
	if end := testkit.WaitTerminal(t, e, admin, st.ID, 30*time.Second); end.State != exporter.StateComplete {
		t.Fatalf("ended %s: %s", end.State, end.Error)
	}
	logs, err := rdb.SlowLogGet(context.Background(), 1000).Result()
	if err != nil {
		t.Fatal(err)
	}
	var worst time.Duration
	for _, l := range logs {
		worst = max(worst, l.Duration)
	}
	if worst > 50*time.Millisecond {
		t.Fatalf("one script of the export blocked Redis for %v (1-byte chunks, default 1 MiB batch)", worst)
	}
}

// Attack that found nothing: two asynq tasks on one export (an operator
// re-enqueues it under another task id while the first runs) fence each
// other out, but the data ends byte-identical, never doubled or lost.
func TestTwoTasksOnOneExportStillCopyItExactlyOnce(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(4<<10), exporter.WithQueue("dup"))
	src := randomBytes(1<<20, 11)
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(tasks.Payload{ExportID: st.ID})
	cl := asynq.NewClientFromRedisClient(rdb)
	if _, err := cl.Enqueue(asynq.NewTask(tasks.TypeExport, payload), asynq.Queue("dup"), asynq.TaskID("dup-"+st.ID)); err != nil {
		t.Fatal(err)
	}
	ev := testkit.NewEvents()
	for range 2 {
		testkit.StartWorker(t, rdb, worker.Config{Queue: "dup", MaxRate: 1 << 20, Concurrency: 1, EventHook: ev.Hook})
	}
	end := testkit.WaitTerminal(t, e, admin, st.ID, 30*time.Second)
	if end.State != exporter.StateComplete {
		t.Fatalf("ended %s: %s", end.State, end.Error)
	}
	if got := testkit.Download(t, e, admin, st.ID); !bytes.Equal(got, src) {
		t.Fatalf("data %d bytes sha %s, source %d bytes sha %s", len(got), sum(got), len(src), sum(src))
	}
	claims := 0
	for _, x := range ev.Of(st.ID) {
		if x.Kind == tasks.EventClaimed {
			claims++
		}
	}
	if claims < 2 {
		t.Fatalf("only %d claims: the two tasks never overlapped; events %v", claims, ev.Of(st.ID))
	}
	testkit.AssertTTLs(t, rdb)
}
