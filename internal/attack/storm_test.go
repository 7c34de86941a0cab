package attack_test

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/internal/worker"
	"github.com/exportsvc/exportsvc/storage"
)

// Attack that found nothing: cancels at random moments while workers are
// shut down and replaced every 150 ms (every running export is handed
// back and resumed elsewhere, so cancels land on queued, running,
// handed-back and retried tasks). Every acknowledged cancel holds: the
// export stays CANCELLED with the progress it had at the acknowledgement
// and no data or source key ever comes back; every refused cancel is an
// export that is COMPLETE and byte-identical; exports not cancelled
// complete byte-identical; no task of a cancelled export is left a few
// seconds later; no key lacks a TTL at any snapshot.
func TestCancelsDuringWorkerChurnHold(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(4<<10), exporter.WithQueue("storm"))
	watch := watchTTLs(srv.Client(t))

	const n = 24
	ids := make([]string, n)
	srcs := make([][]byte, n)
	for i := range ids {
		srcs[i] = randomBytes(512<<10+i*4099, uint64(400+i))
		st, err := e.StartExport(ctx, alice, bytes.NewReader(srcs[i]))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = st.ID
	}
	cfg := worker.Config{Queue: "storm", MaxRate: 512 << 10, Concurrency: 6, TaskCheckInterval: 10 * time.Millisecond,
		DelayedInterval: 100 * time.Millisecond, SweepInterval: 200 * time.Millisecond, Logger: testkit.Logger()}
	start := func() *worker.Worker {
		w := worker.New(rdb, cfg)
		if err := w.Start(); err != nil {
			t.Fatal(err)
		}
		return w
	}
	workers := []*worker.Worker{start(), start()}
	churnStop, churnDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(churnDone)
		for i := 0; ; i++ {
			select {
			case <-churnStop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			workers[i%2].Shutdown()
			workers[i%2] = start()
		}
	}()
	t.Cleanup(func() {
		for _, w := range workers {
			w.Shutdown()
		}
	})

	type ack struct {
		st  exporter.Status
		err error
	}
	acks := make([]*ack, n)
	var wg sync.WaitGroup
	r := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		if i%3 == 2 {
			continue // a third is never cancelled
		}
		delay := time.Duration(r.IntN(1500)) * time.Millisecond
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(delay)
			st, err := e.CancelExport(ctx, alice, ids[i])
			acks[i] = &ack{st, err}
		}()
	}
	wg.Wait()
	time.Sleep(500 * time.Millisecond)
	close(churnStop)
	<-churnDone

	var cancelled []string
	for i, id := range ids {
		end := testkit.WaitTerminal(t, e, admin, id, 30*time.Second)
		a := acks[i]
		switch {
		case a != nil && a.err == nil:
			k := storage.KeysFor(id)
			if end.State != exporter.StateCancelled || end.BytesCopied != a.st.BytesCopied || end.Chunks != a.st.Chunks {
				t.Errorf("export %d: cancel acknowledged at %d bytes, now %s at %d bytes", i, a.st.BytesCopied, end.State, end.BytesCopied)
			}
			if c := rdb.Exists(ctx, k.Data, k.Source).Val(); c != 0 {
				t.Errorf("export %d: data or source exists after an acknowledged cancel", i)
			}
			cancelled = append(cancelled, id)
		case a != nil && !errors.Is(a.err, exporter.ErrNotCancellable):
			t.Errorf("export %d: cancel failed: %v", i, a.err)
		default:
			if end.State != exporter.StateComplete {
				t.Errorf("export %d: ended %s (%s), want COMPLETE", i, end.State, end.Error)
			} else if got := testkit.Download(t, e, admin, id); !bytes.Equal(got, srcs[i]) {
				t.Errorf("export %d: %d bytes downloaded, want %d", i, len(got), len(srcs[i]))
			}
		}
	}
	if len(cancelled) == 0 {
		t.Fatal("no cancel was acknowledged: the attack missed")
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, id := range cancelled {
		for testkit.TaskState(t, rdb, "storm", id) != "" {
			if time.Now().After(deadline) {
				t.Fatalf("the task of cancelled export %s is still %s", id, testkit.TaskState(t, rdb, "storm", id))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	watch.check(t)
	testkit.AssertTTLs(t, rdb)
	t.Logf("%d of %d cancels acknowledged", len(cancelled), n*2/3)
}
