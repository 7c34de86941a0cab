package attack_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/internal/worker"
)

// connectedClients counts the server's connections named name.
func connectedClients(t *testing.T, rdb *redis.Client, name string) int {
	t.Helper()
	list, err := rdb.ClientList(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(list, "\n") {
		if strings.Contains(l, " name="+name+" ") {
			n++
		}
	}
	return n
}

// Attack that found nothing: a worker started, run through exports (one
// completed, one cancelled while running) and shut down leaves no
// goroutine behind and closes the connections it opened (asynq's pub/sub
// subscription included) once its client is closed; Shutdown with a
// running export returns promptly (hand-back at the next batch).
func TestAWorkerShutDownLeavesNoGoroutineOrConnection(t *testing.T) {
	srv := testkit.StartRedis(t)
	probe := srv.Client(t)
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(4<<10), exporter.WithQueue("leak"))
	base := runtime.NumGoroutine()
	wrdb := redis.NewClient(&redis.Options{Addr: srv.Addr, ClientName: "attack-worker"})
	w := worker.New(wrdb, worker.Config{Queue: "leak", MaxRate: 1 << 20, TaskCheckInterval: 10 * time.Millisecond, Logger: testkit.Logger()})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	done, err := e.StartExport(context.Background(), alice, bytes.NewReader(randomBytes(64<<10, 1)))
	if err != nil {
		t.Fatal(err)
	}
	running, err := e.StartExport(context.Background(), alice, bytes.NewReader(make([]byte, 4<<20)))
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := e.StartExport(context.Background(), alice, bytes.NewReader(make([]byte, 4<<20)))
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitTerminal(t, e, admin, done.ID, 10*time.Second)
	waitChunks(t, e, cancelled.ID, 4, 10*time.Second)
	if _, err := e.CancelExport(context.Background(), alice, cancelled.ID); err != nil {
		t.Fatal(err)
	}
	waitChunks(t, e, running.ID, 4, 10*time.Second)
	start := time.Now()
	w.Shutdown()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown with a running export took %v", d)
	}
	if c := connectedClients(t, probe, "attack-worker"); c == 0 {
		t.Fatal("the worker's connections are not visible by name")
	}
	wrdb.Close()
	if n := settleGoroutines(base, 5*time.Second); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before the worker, %d after its shutdown:\n%s", base, n, buf[:runtime.Stack(buf, true)])
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		c := connectedClients(t, probe, "attack-worker")
		if c == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%d connections of the worker's client still open after its shutdown and Close", c)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Attack that found nothing: the download reader behaves as an io.Reader
// must (iotest.TestReader: odd buffer sizes, one-byte and zero-length
// reads, sticky EOF), and when the retention TTL runs out part way it
// fails instead of returning a short file with io.EOF.
func TestTheDownloadReaderIsAProperReaderAndFailsOnExpiry(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(64<<10), exporter.WithQueue("dl"), exporter.WithRetentionTTL(1500*time.Millisecond))
	testkit.StartWorker(t, rdb, worker.Config{Queue: "dl"})
	src := randomBytes(3_000_003, 9) // three 1 MiB fetches
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	if end := testkit.WaitTerminal(t, e, admin, st.ID, 10*time.Second); end.State != exporter.StateComplete {
		t.Fatalf("ended %s", end.State)
	}
	rc, err := e.OpenExportData(context.Background(), alice, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := iotest.TestReader(rc, src); err != nil {
		t.Errorf("iotest.TestReader: %v", err)
	}
	rc.Close()
	if _, err := rc.Read(make([]byte, 1)); err == nil || err == io.EOF {
		t.Errorf("read after Close: %v", err)
	}

	rc, err = e.OpenExportData(context.Background(), alice, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 20_000)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1600 * time.Millisecond) // retention runs out
	n, err := io.Copy(io.Discard, rc)
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("download across the retention expiry: %d more bytes and err %v, want an error", n, err)
	}
	testkit.AssertNoKeys(t, rdb)
}
