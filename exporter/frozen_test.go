package exporter_test

import (
	"bytes"
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/storage"
)

func TestCancelWhileTheWorkerIsFrozenLandsNoByte(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(4<<10), exporter.WithQueue("frozen"))
	w := testkit.StartWorkerProcess(t, "--redis", "redis://"+srv.Addr, "--queue", "frozen", "--max-rate", "262144", "--log-level", "info")
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(make([]byte, 2<<20))) // 8 s at the rate
	if err != nil {
		t.Fatal(err)
	}
	waitProgress(t, e, st.ID, 8)

	w.Signal(t, syscall.SIGSTOP) // frozen in the middle of a throttled export
	time.Sleep(200 * time.Millisecond)
	ack, err := e.CancelExport(context.Background(), alice, st.ID)
	if err != nil || ack.State != exporter.StateCancelled {
		t.Fatalf("cancel of a frozen worker's export: %+v, %v", ack, err)
	}
	k := storage.KeysFor(st.ID)
	if n := rdb.Exists(context.Background(), k.Data, k.Source).Val(); n != 0 {
		t.Fatal("data or source exists right after the cancel")
	}
	w.Signal(t, syscall.SIGCONT) // it wakes up with a batch due and the cancel signal queued
	waitTaskGone(t, rdb, "frozen", st.ID, taskGoneWithin)
	time.Sleep(300 * time.Millisecond) // more than two throttled batches
	assertSettledCancelled(t, rdb, e, ack)
	if lines := w.LogLines(`"event":"cancelled"`, st.ID); len(lines) != 1 {
		t.Fatalf("worker logged %d cancel stops for the export, want 1:\n%s", len(lines), w.Logs())
	}
	w.Signal(t, syscall.SIGTERM)
	if code := w.Wait(t, 15*time.Second); code != 0 {
		t.Fatalf("worker exited %d after SIGTERM", code)
	}
	testkit.AssertTTLs(t, rdb)
}
