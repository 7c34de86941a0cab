package attack_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/tasks"
)

// blockingReader yields n bytes, then blocks in Read until release is
// closed, then reports EOF.
type blockingReader struct {
	n       int
	release chan struct{}
	reading chan struct{} // closed when Read first blocks
	once    bool
}

func (r *blockingReader) Read(p []byte) (int, error) {
	if r.n > 0 {
		k := min(len(p), r.n)
		clear(p[:k])
		r.n -= k
		return k, nil
	}
	if !r.once {
		r.once = true
		close(r.reading)
	}
	<-r.release
	return 0, io.EOF
}

// Regression test (this was a bug, fixed): StartExport ignores its context while the caller's reader blocks.
// The staging loop (exporter/start.go, stage) ranges over the batches
// channel without watching ctx, and its deferred cleanup waits for the
// reader goroutine, which is stuck in r.Read; readBatches only looks at
// ctx between batches. A caller whose request is cancelled (an HTTP
// client that went away, a CLI interrupted with Ctrl-C, a deadline) is
// stuck for as long as the reader blocks, possibly forever. Expected:
// StartExport returns ctx's error promptly (the blocked Read can be left
// to finish in the background, or the reader closed if it is an
// io.Closer), leaving no key behind.
func TestStartExportReturnsWhenItsContextEndsWhileTheReaderBlocks(t *testing.T) {
	_, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb)
	r := &blockingReader{n: 100 << 10, release: make(chan struct{}), reading: make(chan struct{})}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := e.StartExport(ctx, alice, r)
		done <- err
	}()
	returned := false
	defer func() { // unblock it whatever happens
		close(r.release)
		if !returned {
			<-done
		}
	}()
	<-r.reading
	select {
	case err := <-done:
		returned = true
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("StartExport returned %v, want context.DeadlineExceeded", err)
		}
		testkit.AssertNoKeys(t, rdb)
	case <-time.After(2 * time.Second):
		t.Fatal("StartExport still blocked 1.8 s after its context's deadline: it waits for the reader, not for ctx")
	}
}

// panicReader panics on its first Read.
type panicReader struct{}

func (panicReader) Read([]byte) (int, error) { panic("reader exploded") }

// Regression test (this was a bug, fixed): a reader that panics kills the whole process. StartExport reads the
// caller's io.Reader on a goroutine of its own (exporter/start.go,
// readBatches), so the panic cannot be recovered by the caller: in a
// service that imports exporter, one bad request body takes down every
// request (net/http's per-request recover never sees it). Expected: the
// panic surfaces on the caller's goroutine (re-panic in StartExport, as
// io.Copy would), or becomes an error; either way recoverable by the
// caller.
func TestAPanickingReaderDoesNotCrashTheCallersProcess(t *testing.T) {
	if os.Getenv("ATTACK_PANIC_CHILD") == "1" {
		_, rdb := testkit.Mini(t)
		e := testkit.NewExporter(t, rdb)
		recovered := func() (r any) {
			defer func() { r = recover() }()
			_, err := e.StartExport(context.Background(), alice, panicReader{})
			return err
		}()
		if recovered == nil {
			t.Fatal("StartExport neither returned an error nor panicked")
		}
		t.Logf("caller saw: %v", recovered)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAPanickingReaderDoesNotCrashTheCallersProcess$", "-test.v")
	cmd.Env = append(os.Environ(), "ATTACK_PANIC_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		first := string(out)
		if i := strings.Index(first, "goroutine "); i > 0 {
			first = first[:i]
		}
		t.Fatalf("the process running StartExport died (%v); the caller could not recover the reader's panic:\n%s", err, first)
	}
}

// errReader yields n bytes, then err.
type errReader struct {
	n   int
	err error
}

func (r *errReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	clear(p[:k])
	r.n -= k
	return k, nil
}

// slowReader yields one small piece per Read, sleeping before each.
type slowReader struct {
	n     int
	delay time.Duration
}

func (r *slowReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	time.Sleep(r.delay)
	k := min(len(p), r.n, 7)
	clear(p[:k])
	r.n -= k
	return k, nil
}

// settleGoroutines waits until the goroutine count drops to at most want.
func settleGoroutines(want int, within time.Duration) int {
	deadline := time.Now().Add(within)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Attack that found nothing: StartExport failing in every way it can
// (reader error before and after the record exists, size limit, Redis
// gone, cancelled context) or succeeding with a slow reader leaves no
// goroutine behind and, on failure, no key.
func TestStartExportLeaksNoGoroutineAndNoKey(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithMaxSize(6<<20))
	boom := errors.New("boom")
	// Warm up the client's pool and any lazily started goroutine.
	if _, err := e.StartExport(context.Background(), alice, bytes.NewReader([]byte("warm"))); err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	cases := []struct {
		name string
		r    io.Reader
		want error
	}{
		{"reader error in the first batch", &errReader{n: 10, err: boom}, boom},
		{"reader error after the record exists", &errReader{n: 5 << 20, err: boom}, boom},
		{"size limit in the first batch", bytes.NewReader(make([]byte, 7<<20)), exporter.ErrTooLarge},
		{"size limit exactly one byte over", bytes.NewReader(make([]byte, 6<<20+1)), exporter.ErrTooLarge},
	}
	for _, c := range cases {
		before := testkit.ExportKeys(t, rdb)
		_, err := e.StartExport(context.Background(), alice, c.r)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
		if after := testkit.ExportKeys(t, rdb); len(after) != len(before) {
			t.Errorf("%s: %d export keys before, %d after", c.name, len(before), len(after))
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.StartExport(ctx, alice, bytes.NewReader(make([]byte, 5<<20))); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: err = %v", err)
	}
	if _, err := e.StartExport(context.Background(), alice, &slowReader{n: 200, delay: time.Millisecond}); err != nil {
		t.Errorf("slow reader: %v", err)
	}
	if n := settleGoroutines(base, 2*time.Second); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after the failed starts:\n%s", base, n, buf[:runtime.Stack(buf, true)])
	}
	testkit.AssertTTLs(t, rdb)

	// Redis goes away in the middle of a multi-batch start.
	dead := srv.Client(t)
	e2 := testkit.NewExporter(t, dead)
	r := &hookReader{n: 12 << 20, at: 6 << 20, hook: srv.Kill}
	if _, err := e2.StartExport(context.Background(), alice, r); err == nil {
		t.Error("StartExport succeeded although Redis died half way")
	}
	dead.Close()
	rdb.Close()
	if n := settleGoroutines(base, 3*time.Second); n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before, %d after a start whose Redis died:\n%s", base, n, buf[:runtime.Stack(buf, true)])
	}
}

// hookReader yields n zero bytes and calls hook once when at bytes are read.
type hookReader struct {
	n, at, done int
	hook        func()
}

func (r *hookReader) Read(p []byte) (int, error) {
	if r.done >= r.n {
		return 0, io.EOF
	}
	k := min(len(p), r.n-r.done)
	clear(p[:k])
	if r.done < r.at && r.done+k >= r.at {
		r.hook()
	}
	r.done += k
	return k, nil
}

// Regression test (this was a bug, fixed): staging sizes its batches in bytes only. readBatches
// (exporter/start.go) allocates a [][]byte of capacity stageBatch =
// 4 MiB / chunk size for every batch, whatever the source's size: with
// the smallest chunk size New accepts (1 B), starting a 10-byte export
// allocates 4 Mi slice headers, about 100 MiB (and up to three such
// batches are in flight per start). Expected: the per-batch chunk count
// is capped (and the slice grown as chunks arrive), so a tiny export
// costs a tiny allocation at any chunk size New accepts.
func TestATinyExportWithTinyChunksAllocatesLittle(t *testing.T) {
	_, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(1))
	if _, err := e.StartExport(context.Background(), alice, bytes.NewReader([]byte("warm"))); err != nil {
		t.Fatal(err)
	}
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	if _, err := e.StartExport(context.Background(), alice, bytes.NewReader([]byte("ten bytes!"))); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&m1)
	if alloc := m1.TotalAlloc - m0.TotalAlloc; alloc > 16<<20 {
		t.Fatalf("starting a 10-byte export with 1-byte chunks allocated %d MiB", alloc>>20)
	}
}

// Regression test (this was a bug, fixed): a positive TTL under one millisecond is accepted and becomes 0.
// WithActiveTTL/WithRetentionTTL (exporter and storage) only reject
// non-positive durations, and storage passes d.Milliseconds() to the
// scripts: 500µs becomes PEXPIRE 0, which deletes the key at once. So
// StartExport returns success and an id whose record is already gone
// (GetExportStatus: ErrNotFound), although DESIGN.md promises a caller
// never sees an id for an export that was not created. (go-redis's own
// PExpire, used by Stage, rounds such a duration up to 1 ms instead.)
// Now: New refuses TTLs below a millisecond (or rounds them up).
func TestASubMillisecondTTLIsRefusedOrRoundedUp(t *testing.T) {
	rdb := testkit.StartRedis(t).Client(t)
	e, err := exporter.New(rdb, exporter.WithLogger(testkit.Logger()), exporter.WithActiveTTL(500*time.Microsecond))
	if err != nil {
		return // refused: fine
	}
	st, err := e.StartExport(context.Background(), alice, strings.NewReader("hello"))
	if err != nil {
		return // refused at start: fine
	}
	if _, err := e.GetExportStatus(context.Background(), alice, st.ID); err != nil {
		t.Fatalf("StartExport returned id %s, but its status right after is: %v", st.ID, err)
	}
}

// Regression test (this was a bug, fixed): DESIGN.md: "Retries are capped so that a task never outlives its
// export's active TTL." Nothing ties the two: exporter.New accepts an
// active TTL shorter than the backoff of the retry count it enqueues with
// (tasks.RetryDelay: 1 s doubling to 5 min), and any retry count at all.
// With WithActiveTTL(10m) and the default 10 retries the backoff alone is
// at least 811 s; with WithMaxRetry(1000) it is days. An export whose
// attempts fail then loses its keys while its task waits; the next
// attempt finds no record and revokes itself, and the caller sees "no
// export found" instead of FAILED with a reason. Expected: New refuses
// (or caps) a retry budget that does not fit in the active TTL.
func TestTheRetryBudgetFitsInTheActiveTTL(t *testing.T) {
	_, rdb := testkit.Mini(t)
	minBackoff := func(retries int) time.Duration {
		var d time.Duration
		for n := 0; n < retries; n++ {
			d += min(time.Second<<min(n, 9), tasks.MaxRetryDelay) // RetryDelay without jitter
		}
		return d
	}
	for _, c := range []struct {
		ttl     time.Duration
		retries int
	}{
		{10 * time.Minute, tasks.DefaultMaxRetry},
		{24 * time.Hour, 1000},
	} {
		_, err := exporter.New(rdb, exporter.WithActiveTTL(c.ttl), exporter.WithMaxRetry(c.retries))
		if b := minBackoff(c.retries); err == nil && b > c.ttl {
			t.Errorf("New accepted active TTL %v with %d retries, whose backoff alone is at least %v", c.ttl, c.retries, b)
		}
	}
}

// Attack that found nothing: user ids with odd characters (newline, NUL,
// quotes, braces, glob characters, a UUID, 64 KiB of text) are stored and
// compared verbatim: the owner sees the export, another user does not.
func TestOddUserIDsOwnTheirExports(t *testing.T) {
	_, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb)
	ids := []string{"a\nb", "nul\x00byte", `"}{*?[]`, "export:{x}", "0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c", "é\u202eevil", strings.Repeat("u", 64<<10), " "}
	for _, id := range ids {
		u := alice
		u.ID = id
		st, err := e.StartExport(context.Background(), u, strings.NewReader("x"))
		if err != nil {
			t.Errorf("user %.20q: %v", id, err)
			continue
		}
		got, err := e.GetExportStatus(context.Background(), u, st.ID)
		if err != nil || got.Owner != id {
			t.Errorf("user %.20q: status %+v, %v", id, got.Owner, err)
		}
		other := exporter.User{ID: id + "x"}
		if _, err := e.GetExportStatus(context.Background(), other, st.ID); !errors.Is(err, exporter.ErrPermissionDenied) {
			t.Errorf("user %.20q: another user got %v, want ErrPermissionDenied", id, err)
		}
	}
	testkit.AssertTTLs(t, rdb)
}
