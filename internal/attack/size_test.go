package attack_test

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/internal/worker"
)

// Attack that found nothing: sources whose sizes sit on every boundary of
// the staging code (empty, one byte, a chunk minus/plus one, the 256-chunk
// limit of the one-script start, the 4 MiB staging batch minus/plus one)
// round-trip byte-identical with their SHA-256 recorded.
func TestSizesOnEveryStagingBoundaryRoundTrip(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	const chunk = 4 << 10 // staging batch: 1024 chunks; one-script start: at most 256
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(chunk), exporter.WithQueue("sizes"))
	testkit.StartWorker(t, rdb, worker.Config{Queue: "sizes", Concurrency: 8})
	var sizes []int
	for _, b := range []int{0, chunk, 256 * chunk, 1024 * chunk, 2048 * chunk} {
		for _, d := range []int{-1, 0, 1} {
			if b+d >= 0 {
				sizes = append(sizes, b+d)
			}
		}
	}
	type started struct {
		id  string
		src []byte
	}
	var all []started
	for i, n := range sizes {
		src := randomBytes(n, uint64(300+i))
		st, err := e.StartExport(context.Background(), alice, bytes.NewReader(src))
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if st.TotalBytes != int64(n) || st.SHA256 != sum(src) || st.TotalChunks != int64((n+chunk-1)/chunk) {
			t.Errorf("%d bytes: start says %d bytes, %d chunks, sha %s", n, st.TotalBytes, st.TotalChunks, st.SHA256)
		}
		all = append(all, started{st.ID, src})
	}
	for _, x := range all {
		if end := testkit.WaitTerminal(t, e, admin, x.id, 20*time.Second); end.State != exporter.StateComplete {
			t.Errorf("%d bytes: ended %s: %s", len(x.src), end.State, end.Error)
			continue
		}
		if got := testkit.Download(t, e, admin, x.id); !bytes.Equal(got, x.src) {
			t.Errorf("%d bytes: downloaded %d", len(x.src), len(got))
		}
	}
	testkit.AssertTTLs(t, rdb)
}

// Regression test (this was a bug, fixed): OpenExportData promises to stream "a batch of chunks at a time,
// without holding them all in memory", but its batch is 16 chunks
// whatever their size (exporter/download.go, downloadBatch): with the
// largest chunk size New accepts (64 MiB) one LRANGE fetches 1 GiB, and
// any export of at most 16 chunks is held whole. Shown here with 8 MiB
// chunks: downloading a 128 MiB export holds all 128 MiB at once.
// Now: a download batch bounded in bytes too (a few MiB, or one
// chunk when chunks are larger), so memory does not scale with the export.
func TestDownloadMemoryDoesNotScaleWithTheExport(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	const chunk, size = 8 << 20, 128 << 20
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(chunk), exporter.WithQueue("bigchunks"))
	testkit.StartWorker(t, rdb, worker.Config{Queue: "bigchunks"})
	st, err := e.StartExport(context.Background(), alice, io.LimitReader(zeros{}, size))
	if err != nil {
		t.Fatal(err)
	}
	if end := testkit.WaitTerminal(t, e, admin, st.ID, 30*time.Second); end.State != exporter.StateComplete {
		t.Fatalf("ended %s: %s", end.State, end.Error)
	}
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	base := m.HeapAlloc
	rc, err := e.OpenExportData(context.Background(), alice, st.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 1<<20)
	var peak uint64
	var total int64
	for {
		n, err := rc.Read(buf)
		total += int64(n)
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapAlloc)
		if err != nil {
			if err != io.EOF {
				t.Fatal(err)
			}
			break
		}
	}
	if total != size {
		t.Fatalf("downloaded %d bytes, want %d", total, size)
	}
	if grew := int64(peak) - int64(base); grew > 64<<20 {
		t.Fatalf("downloading a %d MiB export (%d MiB chunks, read 1 MiB at a time) grew the heap by %d MiB", size>>20, chunk>>20, grew>>20)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
