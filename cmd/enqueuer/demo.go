package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/cliutil"
	"github.com/exportsvc/exportsvc/internal/worker"
	"github.com/exportsvc/exportsvc/storage"
)

// Demo defaults: the sample lasts about 4 s at the default rate, long
// enough to watch a few progress lines or to cancel it.
const (
	demoSampleSize = 384 << 10
	demoRate       = 100 << 10
	demoChunkSize  = 16 << 10
)

// demoUser is the user the demo runs as.
var demoUser = exporter.User{ID: "demo", Permissions: []string{exporter.PermissionExport}}

func (c *cli) demo(args []string) error {
	fs := c.newFlags("demo", "",
		"Starts an embedded Redis (miniredis) and a worker in this process, exports\nFILE through them at a throttled rate, prints the status every 500ms, then\ndownloads the result and compares SHA-256 sums. Exits 0 only when the\nexport is COMPLETE and the sums match; with --cancel-after, only when the\ncancel ends it CANCELLED with its data gone.")
	file := fs.String("file", "", "file to export (default: a generated 384 KiB sample of text lines)")
	cancelAfter := fs.Duration("cancel-after", 0, "cancel the export this long after it starts, and check that its data is gone")
	maxRate := cliutil.Bytes(demoRate)
	fs.Var(&maxRate, "max-rate", "the worker's rate limit per export, bytes per second (102400, 100KiB); 0 is no limit")
	chunkSize := cliutil.Bytes(demoChunkSize)
	fs.Var(&chunkSize, "chunk-size", "chunk size of the export, bytes (16384, 16KiB)")
	level := cliutil.Level{Level: slog.LevelWarn}
	fs.Var(&level, "log-level", "level of the worker's and exporter's JSON log lines on stderr (env LOG_LEVEL)")
	if err := c.parse(fs, args, map[string]string{"log-level": "LOG_LEVEL"}, 0); err != nil {
		return err
	}
	switch {
	case *cancelAfter < 0:
		return cliutil.UsageError("demo: --cancel-after must not be negative")
	case chunkSize <= 0 || chunkSize > 64<<20:
		return cliutil.UsageError("demo: --chunk-size must be between 1 B and 64 MiB")
	}

	// The source: FILE, or the generated sample; hashed as it is staged.
	var src io.Reader
	srcName := fmt.Sprintf("generated sample (%d bytes of text lines)", demoSampleSize)
	if *file != "" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		src, srcName = f, *file
	} else {
		src = bytes.NewReader(Sample(demoSampleSize))
	}
	srcHash := sha256.New()
	src = io.TeeReader(src, srcHash)

	log := cliutil.NewLogger(c.stderr, level.Level)
	mr, err := miniredis.Run()
	if err != nil {
		return fmt.Errorf("starting miniredis: %w", err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	w := worker.New(rdb, worker.Config{TaskCheckInterval: 10 * time.Millisecond, MaxRate: int64(maxRate), Logger: log})
	if err := w.Start(); err != nil {
		return err
	}
	defer w.Shutdown()
	e, err := exporter.New(rdb, exporter.WithLogger(log), exporter.WithChunkSize(int(chunkSize)))
	if err != nil {
		return err
	}

	rate := "no rate limit"
	if maxRate > 0 {
		rate = fmt.Sprintf("rate limit %d bytes/s", int64(maxRate))
	}
	fmt.Fprintf(c.stdout, "demo: miniredis on %s, one worker in this process, %s\n", mr.Addr(), rate)
	fmt.Fprintf(c.stdout, "demo: exporting %s as user %q\n", srcName, demoUser.ID)
	began := time.Now()
	st, err := e.StartExport(c.ctx, demoUser, src)
	if err != nil {
		return err
	}
	srcSum := hex.EncodeToString(srcHash.Sum(nil))
	fmt.Fprintf(c.stdout, "demo: export %s started: %d bytes in %d chunks of %d\n", st.ID, st.TotalBytes, st.TotalChunks, int64(chunkSize))
	c.demoLine(began, st)

	var cancelC <-chan time.Time
	if *cancelAfter > 0 {
		t := time.NewTimer(*cancelAfter)
		defer t.Stop()
		cancelC = t.C
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !st.State.Terminal() {
		select {
		case <-c.ctx.Done():
			return c.ctx.Err()
		case <-cancelC:
			return c.demoCancel(e, rdb, began, st.ID, *cancelAfter)
		case <-tick.C:
		}
		if st, err = e.GetExportStatus(c.ctx, demoUser, st.ID); err != nil {
			return err
		}
		c.demoLine(began, st)
	}
	if *cancelAfter > 0 {
		return fmt.Errorf("export ended %s before the cancel after %v: slow it down with --max-rate", st.State, *cancelAfter)
	}
	if st.State != exporter.StateComplete {
		return fmt.Errorf("export ended %s: %s", st.State, st.Error)
	}

	rc, err := e.OpenExportData(c.ctx, demoUser, st.ID)
	if err != nil {
		return err
	}
	defer rc.Close()
	dlHash := sha256.New()
	n, err := io.Copy(dlHash, rc)
	if err != nil {
		return fmt.Errorf("download: %w", err)
	}
	dlSum := hex.EncodeToString(dlHash.Sum(nil))
	fmt.Fprintf(c.stdout, "demo: downloaded %d bytes\n", n)
	fmt.Fprintf(c.stdout, "source   sha256 %s\n", srcSum)
	fmt.Fprintf(c.stdout, "download sha256 %s\n", dlSum)
	if dlSum != srcSum || n != st.TotalBytes {
		fmt.Fprintf(c.stderr, "enqueuer: demo FAILED: the download differs from the source\n")
		return errReported
	}
	fmt.Fprintf(c.stdout, "demo: OK, checksums match\n")
	return nil
}

// demoCancel cancels the export and checks the cancel guarantee: the
// export is CANCELLED, its data is gone and stays gone.
func (c *cli) demoCancel(e *exporter.Exporter, rdb *redis.Client, began time.Time, id string, after time.Duration) error {
	st, err := e.CancelExport(c.ctx, demoUser, id)
	if errors.Is(err, exporter.ErrNotCancellable) {
		return fmt.Errorf("cancel after %v: %w (the export was faster: lower --max-rate)", after, err)
	}
	if err != nil {
		return fmt.Errorf("cancel after %v: %w", after, err)
	}
	fmt.Fprintf(c.stdout, "demo: cancelled after %v\n", after)
	c.demoLine(began, st)
	if st.State != exporter.StateCancelled {
		return fmt.Errorf("cancel returned state %s, want CANCELLED", st.State)
	}
	// Whatever a worker still does, nothing may reappear: look twice.
	keys := storage.KeysFor(id)
	for i := range 2 {
		if i > 0 {
			time.Sleep(3 * pollInterval / 5)
		}
		if _, err := e.OpenExportData(c.ctx, demoUser, id); !errors.Is(err, exporter.ErrNotComplete) {
			return fmt.Errorf("download of a cancelled export: got %v, want %v", err, exporter.ErrNotComplete)
		}
		n, err := rdb.Exists(c.ctx, keys.Data, keys.Source).Result()
		if err != nil {
			return err
		}
		if n != 0 {
			return fmt.Errorf("export %s is CANCELLED but %d of its data/source keys still exist", id, n)
		}
	}
	if st, err = e.GetExportStatus(c.ctx, demoUser, id); err != nil {
		return err
	}
	c.demoLine(began, st)
	fmt.Fprintf(c.stdout, "demo: OK, export CANCELLED; its data is gone and the download is refused (%v)\n", exporter.ErrNotComplete)
	return nil
}

func (c *cli) demoLine(began time.Time, st exporter.Status) {
	pct := 100.0
	if st.TotalBytes > 0 {
		pct = 100 * float64(st.BytesCopied) / float64(st.TotalBytes)
	}
	fmt.Fprintf(c.stdout, "%6.1fs  %-9s %8d/%d bytes (%5.1f%%)  chunks %d/%d\n",
		time.Since(began).Seconds(), st.State, st.BytesCopied, st.TotalBytes, pct, st.Chunks, st.TotalChunks)
}

// Sample returns size bytes of readable, numbered text lines (64 bytes
// each up to line 999999); the same size always gives the same bytes.
func Sample(size int) []byte {
	var b bytes.Buffer
	b.Grow(size + 64)
	for i := 1; b.Len() < size; i++ {
		fmt.Fprintf(&b, "line %06d: the quick brown fox jumps over the lazy dog again.\n", i)
	}
	return b.Bytes()[:size]
}
