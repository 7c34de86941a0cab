package exporter_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/internal/worker"
	"github.com/exportsvc/exportsvc/storage"
)

// pollStates records each state a poller sees until the export is terminal.
func pollStates(t *testing.T, e *exporter.Exporter, id string, every time.Duration, within time.Duration) ([]exporter.State, exporter.Status) {
	t.Helper()
	var seen []exporter.State
	deadline := time.Now().Add(within)
	for {
		st, err := e.GetExportStatus(context.Background(), alice, id)
		if err != nil {
			t.Fatal(err)
		}
		if len(seen) == 0 || seen[len(seen)-1] != st.State {
			seen = append(seen, st.State)
		}
		if st.State.Terminal() {
			return seen, st
		}
		if time.Now().After(deadline) {
			t.Fatalf("export still %s after %v; states seen %v", st.State, within, seen)
		}
		time.Sleep(every)
	}
}

func TestAPollerSeesCreatedPendingComplete(t *testing.T) {
	_, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(1024))
	in := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	// No worker yet: the export waits, CREATED, with the active TTL.
	if got, _ := e.GetExportStatus(context.Background(), alice, st.ID); got.State != exporter.StateCreated {
		t.Fatalf("before any worker: %s, want CREATED", got.State)
	}
	for _, k := range []string{storage.KeysFor(st.ID).Status, storage.KeysFor(st.ID).Source} {
		if ttl := rdb.PTTL(context.Background(), k).Val(); ttl < 23*time.Hour || ttl > 24*time.Hour {
			t.Fatalf("%s TTL = %v, want the 24 h active TTL", k, ttl)
		}
	}
	testkit.StartWorker(t, rdb, worker.Config{MaxRate: 64 << 10}) // about one second
	states, end := pollStates(t, e, st.ID, 10*time.Millisecond, 15*time.Second)
	want := []exporter.State{exporter.StateCreated, exporter.StatePending, exporter.StateComplete}
	if !equalStates(states, want) {
		t.Fatalf("states seen %v, want %v", states, want)
	}
	if end.BytesCopied != int64(len(in)) || end.Attempts != 1 || end.StartedAt.IsZero() || end.FinishedAt.Before(end.StartedAt) {
		t.Fatalf("final status %+v", end)
	}
	if d := end.FinishedAt.Sub(end.StartedAt); d < 700*time.Millisecond {
		t.Fatalf("throttled to 64 KiB/s, a 64 KiB export took only %v", d)
	}
	k := storage.KeysFor(st.ID)
	if n := rdb.Exists(context.Background(), k.Source).Val(); n != 0 {
		t.Fatalf("staged source still exists after COMPLETE")
	}
	for _, key := range []string{k.Status, k.Data} {
		if ttl := rdb.PTTL(context.Background(), key).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
			t.Fatalf("%s TTL = %v after COMPLETE, want the 1 h retention", key, ttl)
		}
	}
	if !bytes.Equal(testkit.Download(t, e, alice, st.ID), in) {
		t.Fatal("downloaded bytes differ from the source")
	}
	testkit.AssertTTLs(t, rdb)
}

func equalStates(a, b []exporter.State) bool {
	return strings.Join(toStrings(a), ",") == strings.Join(toStrings(b), ",")
}

func toStrings(s []exporter.State) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return out
}

func TestAStagedChunkThatDisappearsFailsTheExport(t *testing.T) {
	for name, damage := range map[string]func(rdb *redis.Client, k storage.Keys) error{
		"one chunk popped": func(rdb *redis.Client, k storage.Keys) error { return rdb.LPop(context.Background(), k.Source).Err() },
		"source deleted":   func(rdb *redis.Client, k storage.Keys) error { return rdb.Del(context.Background(), k.Source).Err() },
		"data trimmed":     func(rdb *redis.Client, k storage.Keys) error { return rdb.RPop(context.Background(), k.Data).Err() },
	} {
		t.Run(name, func(t *testing.T) {
			_, rdb := testkit.Mini(t)
			e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(1024))
			in := bytes.Repeat([]byte("x"), 64<<10)
			st, err := e.StartExport(context.Background(), alice, bytes.NewReader(in))
			if err != nil {
				t.Fatal(err)
			}
			testkit.StartWorker(t, rdb, worker.Config{MaxRate: 32 << 10})
			waitProgress(t, e, st.ID, 4)
			if err := damage(rdb, storage.KeysFor(st.ID)); err != nil {
				t.Fatal(err)
			}
			end := testkit.WaitTerminal(t, e, alice, st.ID, 10*time.Second)
			if end.State != exporter.StateFailed || !strings.Contains(end.Error, "staged source damaged") {
				t.Fatalf("final status %+v, want FAILED with 'staged source damaged'", end)
			}
			k := storage.KeysFor(st.ID)
			if n := rdb.Exists(context.Background(), k.Source, k.Data).Val(); n != 0 {
				t.Fatalf("%d of source and data still exist after FAILED", n)
			}
			if _, err := e.OpenExportData(context.Background(), alice, st.ID); err == nil {
				t.Fatal("a FAILED export's data could be opened")
			}
			testkit.AssertTTLs(t, rdb)
		})
	}
}

// waitProgress waits until at least n chunks of export id are copied.
func waitProgress(t *testing.T, e *exporter.Exporter, id string, n int64) exporter.Status {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := e.GetExportStatus(context.Background(), admin, id)
		if err != nil {
			t.Fatal(err)
		}
		if st.Chunks >= n {
			return st
		}
		if st.State.Terminal() || time.Now().After(deadline) {
			t.Fatalf("waiting for %d chunks: %+v", n, st)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// patternReader yields n deterministic pseudo-random bytes and hashes
// them. It cycles through a block whose length (1 MiB + 7) is not a
// multiple of any chunk size, so no two chunks are alike; copying keeps
// it fast under the race detector.
type patternReader struct {
	left int64
	off  int
	h    hashWriter
}

type hashWriter interface{ Write([]byte) (int, error) }

var patternBlock = func() []byte {
	b := make([]byte, 1<<20+7)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}()

func (r *patternReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(int64(len(p)), r.left)], patternBlock[r.off:])
	r.off = (r.off + n) % len(patternBlock)
	r.h.Write(p[:n])
	r.left -= int64(n)
	return n, nil
}

func TestAnExportOver512MiBCompletesOnRealRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("large export skipped in -short mode")
	}
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb)
	testkit.StartWorker(t, rdb, worker.Config{})
	const size = 513<<20 + 7 // past a Redis string's 512 MB cap, and not a whole number of chunks
	h := sha256.New()
	start := time.Now()
	st, err := e.StartExport(context.Background(), alice, &patternReader{left: size, h: h})
	if err != nil {
		t.Fatal(err)
	}
	staged := time.Since(start)
	want := hex.EncodeToString(h.Sum(nil))
	if st.TotalBytes != size || st.SHA256 != want {
		t.Fatalf("staged %d bytes with sha %s, want %d and %s", st.TotalBytes, st.SHA256, size, want)
	}
	end := testkit.WaitTerminal(t, e, alice, st.ID, 5*time.Minute)
	total := time.Since(start)
	if end.State != exporter.StateComplete || end.BytesCopied != size {
		t.Fatalf("final status %+v", end)
	}
	rc, err := e.OpenExportData(context.Background(), alice, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	got := sha256.New()
	n, err := io.Copy(got, rc)
	rc.Close()
	if err != nil || n != size || hex.EncodeToString(got.Sum(nil)) != want {
		t.Fatalf("downloaded %d bytes (err %v), sha %x; want %d bytes, sha %s", n, err, got.Sum(nil), size, want)
	}
	t.Logf("513 MiB export: staged in %v, COMPLETE after %v (%.0f MB/s end to end)", staged.Round(time.Millisecond), total.Round(time.Millisecond), float64(size)/1e6/total.Seconds())
	testkit.AssertTTLs(t, rdb)
}
