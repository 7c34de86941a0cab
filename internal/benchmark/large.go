package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
)

// block is the content every large write cycles through: the same bytes
// for the raw baseline and for the export.
var block = func() []byte {
	b := make([]byte, 1<<20)
	x := uint64(0x9e3779b97f4a7c15)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}()

// cycleReader yields n bytes of block, over and over.
type cycleReader struct{ left, off int64 }

func (r *cycleReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(int64(len(p)), r.left)], block[r.off:])
	r.off = (r.off + int64(n)) % int64(len(block))
	r.left -= int64(n)
	return n, nil
}

// rawRPush writes size bytes as 64 KiB elements, pipelined by 16, and
// returns MB/s.
func rawRPush(rdb *redis.Client, size int64) (float64, error) {
	ctx := context.Background()
	const chunk = 64 << 10
	r := &cycleReader{left: size}
	buf := make([][]byte, 16)
	for i := range buf {
		buf[i] = make([]byte, chunk)
	}
	start := time.Now()
	for r.left > 0 {
		p := rdb.Pipeline()
		for i := range buf {
			if r.left == 0 {
				break
			}
			b := buf[i][:min(chunk, r.left)]
			io.ReadFull(r, b)
			p.RPush(ctx, "bench:raw", b)
		}
		if _, err := p.Exec(ctx); err != nil {
			return 0, err
		}
	}
	d := time.Since(start)
	return float64(size) / 1e6 / d.Seconds(), rdb.Del(ctx, "bench:raw").Err()
}

// largeExport runs one export through a cmd/worker process and returns
// MB/s from StartExport to COMPLETE and the worker's peak RSS.
func largeExport(rdb *redis.Client, addr, bin string, size int64) (float64, int64, error) {
	ctx := context.Background()
	queue := fmt.Sprintf("bench-large-%d", time.Now().UnixNano())
	w := exec.Command(bin, "--redis", "redis://"+addr, "--queue", queue, "--concurrency", "2", "--log-level", "warn")
	w.Stderr = os.Stderr
	if err := w.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { w.Process.Signal(os.Interrupt); w.Wait() }()
	e, err := exporter.New(rdb, exporter.WithQueue(queue), exporter.WithLogger(quiet()))
	if err != nil {
		return 0, 0, err
	}
	time.Sleep(500 * time.Millisecond) // the worker is up and polling
	start := time.Now()
	st, err := e.StartExport(ctx, user, &cycleReader{left: size})
	if err != nil {
		return 0, 0, err
	}
	staged := time.Since(start)
	for {
		s, err := e.GetExportStatus(ctx, user, st.ID)
		if err != nil {
			return 0, 0, err
		}
		if s.State == exporter.StateComplete {
			break
		}
		if s.State.Terminal() {
			return 0, 0, fmt.Errorf("large export ended %s: %s", s.State, s.Error)
		}
		time.Sleep(2 * time.Millisecond)
	}
	d := time.Since(start)
	hwm := peakRSS(w.Process.Pid)
	fmt.Fprintf(os.Stderr, "  export: staged in %v (%.0f MB/s), copied in %v (%.0f MB/s)\n", staged.Round(time.Millisecond),
		float64(size)/1e6/staged.Seconds(), (d - staged).Round(time.Millisecond), float64(size)/1e6/(d-staged).Seconds())
	return float64(size) / 1e6 / d.Seconds(), hwm, rdb.Del(ctx, "export:{"+st.ID+"}", "export:{"+st.ID+"}-data").Err()
}

// peakRSS reads VmHWM of a process, in bytes.
func peakRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			var kb int64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:")), "%d", &kb)
			return kb << 10
		}
	}
	return -1
}
