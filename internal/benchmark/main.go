// Command benchmark measures the export service against its performance
// targets (docs/design.md) and prints a table. Every figure is a ratio of
// two measurements taken in the same run, on a redis-server it starts
// itself: shared machines drift, ratios much less. Run it with `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/redisproc"
	"github.com/exportsvc/exportsvc/internal/worker"
	"github.com/exportsvc/exportsvc/tasks"
)

var user = exporter.User{ID: "bench", Permissions: []string{exporter.PermissionExport}}

var commandStats bool

// printCommandStats prints and resets Redis's per-command statistics.
func printCommandStats(rdb *redis.Client, phase string) {
	if !commandStats {
		return
	}
	ctx := context.Background()
	fmt.Fprintf(os.Stderr, "commandstats after %s:\n", phase)
	for _, l := range strings.Split(rdb.Info(ctx, "commandstats").Val(), "\r\n") {
		if strings.HasPrefix(l, "cmdstat_") {
			fmt.Fprintln(os.Stderr, "  "+l)
		}
	}
	rdb.ConfigResetStat(ctx)
}

func main() {
	size := flag.Int64("size", 1<<30, "bytes of the large export")
	small := flag.Int("small", 10000, "number of small exports")
	cancels := flag.Int("cancels", 250, "number of cancels of running exports")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of this process to the file")
	flag.BoolVar(&commandStats, "commandstats", false, "print Redis's per-command CPU use after each phase")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchmark:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*size, *small, *cancels); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "benchmark:", err)
		os.Exit(1)
	}
}

type row struct{ name, value, target, verdict string }

func run(size int64, small, cancels int) error {
	dir, err := os.MkdirTemp("", "export-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := redisproc.Start(dir)
	if err != nil {
		return err
	}
	defer srv.Kill()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 64})
	defer rdb.Close()
	fmt.Fprintf(os.Stderr, "redis-server %s, building cmd/worker...\n", srv.Addr)
	bin := filepath.Join(dir, "worker")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/worker").CombinedOutput(); err != nil {
		return fmt.Errorf("building cmd/worker: %v\n%s", err, out)
	}
	var rows []row

	// 1. One large export against raw pipelined RPUSH of the same bytes.
	// Redis runs faster on memory it has touched before, so a warm-up pass
	// comes first; then three alternated rounds, each giving a ratio of two
	// neighbouring measurements, so that drift hits both alike.
	if _, err := rawRPush(rdb, size); err != nil {
		return err
	}
	var raws, exps, ratios []float64
	var rss int64
	for round := 0; round < 3; round++ {
		r, err := rawRPush(rdb, size)
		if err != nil {
			return err
		}
		e, hwm, err := largeExport(rdb, srv.Addr, bin, size)
		if err != nil {
			return err
		}
		raws, exps, ratios, rss = append(raws, r), append(exps, e), append(ratios, e/r), max(rss, hwm)
		fmt.Fprintf(os.Stderr, "round %d: raw RPUSH %.0f MB/s, export %.0f MB/s (%.1f%%), worker peak RSS %d MiB\n", round+1, r, e, 100*e/r, hwm>>20)
	}
	slices.Sort(ratios)
	ratio := ratios[1] // the median round
	rows = append(rows,
		row{"raw pipelined RPUSH, " + mib(size) + ", mean", fmt.Sprintf("%.0f MB/s", mean(raws)), "", ""},
		row{"one export, stage + copy to COMPLETE, mean", fmt.Sprintf("%.0f MB/s", mean(exps)), "", ""},
		row{"  export / raw RPUSH, median of 3 rounds", fmt.Sprintf("%.1f%%", 100*ratio), ">= 45%", verdict(ratio >= 0.45)},
		row{"  worker peak RSS (VmHWM)", fmt.Sprintf("%d MiB", rss>>20), "< 64 MiB", verdict(rss < 64<<20)},
	)

	// 2. Many small exports against asynq no-op tasks, alternated twice.
	var noops, smalls []float64
	for round := 0; round < 2; round++ {
		noop, err := noopTasks(rdb, small, round)
		if err != nil {
			return err
		}
		printCommandStats(rdb, "no-op tasks")
		exports, err := smallExports(rdb, small, round)
		if err != nil {
			return err
		}
		noops, smalls = append(noops, noop), append(smalls, exports)
		printCommandStats(rdb, "small exports")
		fmt.Fprintf(os.Stderr, "round %d: %d no-op tasks %.0f/s, %d small exports %.0f/s (%.1f%%)\n", round+1, small, noop, small, exports, 100*exports/noop)
	}
	smallRatio := mean(smalls) / mean(noops)
	rows = append(rows,
		row{fmt.Sprintf("asynq no-op tasks (%d), mean of 2", small), fmt.Sprintf("%.0f /s", mean(noops)), "", ""},
		row{fmt.Sprintf("1 KiB exports, start to COMPLETE (%d)", small), fmt.Sprintf("%.0f /s", mean(smalls)), "", ""},
		row{"  exports / no-op tasks", fmt.Sprintf("%.1f%%", 100*smallRatio), ">= 50%", verdict(smallRatio >= 0.5)},
	)

	// 3. Cancels of running exports.
	lat, gone, ack, err := cancelLatency(rdb, cancels)
	if err != nil {
		return err
	}
	rows = append(rows,
		row{fmt.Sprintf("cancel -> handler stopped, p50 (%d)", len(lat)), ms(pct(lat, 50)), "", ""},
		row{"cancel -> handler stopped, p99", ms(pct(lat, 99)), "<= 20 ms", verdict(pct(lat, 99) <= 20*time.Millisecond)},
		row{"cancel -> handler stopped, max", ms(pct(lat, 100)), "", ""},
		row{"cancel call -> acknowledged, p50", ms(pct(ack, 50)), "", ""},
		row{"cancel call -> acknowledged, p99", ms(pct(ack, 99)), "", ""},
		row{"cancel -> no task left, p99", ms(pct(gone, 99)), "a few s", verdict(pct(gone, 99) < 3*time.Second)},
	)

	fmt.Printf("\n%-44s %12s %10s  %s\n", "measure", "value", "target", "")
	fmt.Println(strings.Repeat("-", 76))
	for _, r := range rows {
		fmt.Printf("%-44s %12s %10s  %s\n", r.name, r.value, r.target, r.verdict)
	}
	return nil
}

func verdict(ok bool) string {
	if ok {
		return "ok"
	}
	return "MISSED"
}

func mib(n int64) string { return fmt.Sprintf("%d MiB", n>>20) }

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func pct(v []time.Duration, p int) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

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

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

const concurrency = 32

// enqueueAll runs start(i) for i < n from 16 goroutines.
func enqueueAll(n int, start func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := start(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// noopTasks enqueues n no-op asynq tasks and returns how many were
// processed per second, from the first enqueue to the last one done.
func noopTasks(rdb *redis.Client, n, round int) (float64, error) {
	queue := fmt.Sprintf("bench-noop-%d", round)
	var done atomic.Int64
	finished := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency: concurrency, Queues: map[string]int{queue: 1}, TaskCheckInterval: 100 * time.Millisecond,
		LogLevel: asynq.ErrorLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("noop", func(context.Context, *asynq.Task) error {
		if done.Add(1) == int64(n) {
			close(finished)
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		return 0, err
	}
	defer srv.Shutdown()
	client := asynq.NewClientFromRedisClient(rdb)
	start := time.Now()
	payload := make([]byte, 1024)
	if err := enqueueAll(n, func(i int) error {
		_, err := client.Enqueue(asynq.NewTask("noop", payload, asynq.Queue(queue), asynq.TaskID(fmt.Sprintf("noop-%d-%d", round, i))))
		return err
	}); err != nil {
		return 0, err
	}
	<-finished
	return float64(n) / time.Since(start).Seconds(), nil
}

// smallExports starts n exports of 1 KiB and returns how many reached
// COMPLETE per second, from the first start to the last COMPLETE.
func smallExports(rdb *redis.Client, n, round int) (float64, error) {
	queue := fmt.Sprintf("bench-small-%d", round)
	var done atomic.Int64
	finished := make(chan struct{})
	w := worker.New(rdb, worker.Config{Queue: queue, Concurrency: concurrency, Logger: quiet(),
		EventHook: func(ev tasks.Event) {
			if ev.Kind == tasks.EventComplete && done.Add(1) == int64(n) {
				close(finished)
			}
		}})
	if err := w.Start(); err != nil {
		return 0, err
	}
	defer w.Shutdown()
	e, err := exporter.New(rdb, exporter.WithQueue(queue), exporter.WithLogger(quiet()))
	if err != nil {
		return 0, err
	}
	payload := block[:1024]
	start := time.Now()
	if err := enqueueAll(n, func(int) error {
		_, err := e.StartExport(context.Background(), user, strings.NewReader(string(payload)))
		return err
	}); err != nil {
		return 0, err
	}
	<-finished
	return float64(n) / time.Since(start).Seconds(), nil
}

// cancelLatency cancels n running exports and returns, for each, the time
// from the cancel call to the handler's stop, to the acknowledgement and
// to the task's removal. Exports are started (and staged) in rounds of the
// worker's concurrency before any is cancelled, so that staging traffic
// does not sit in front of the cancels.
func cancelLatency(rdb *redis.Client, n int) (stop, gone, ack []time.Duration, err error) {
	queue := "bench-cancel"
	var mu sync.Mutex
	stopped := map[string]chan time.Time{} // registered before each cancel
	w := worker.New(rdb, worker.Config{Queue: queue, Concurrency: concurrency, MaxRate: 256 << 10, Logger: quiet(),
		TaskCheckInterval: 10 * time.Millisecond,
		EventHook: func(ev tasks.Event) {
			if ev.Kind == tasks.EventCancelled {
				mu.Lock()
				if ch, ok := stopped[ev.ExportID]; ok {
					select {
					case ch <- ev.At:
					default:
					}
				}
				mu.Unlock()
			}
		}})
	if err := w.Start(); err != nil {
		return nil, nil, nil, err
	}
	defer w.Shutdown()
	e, err := exporter.New(rdb, exporter.WithQueue(queue), exporter.WithLogger(quiet()))
	if err != nil {
		return nil, nil, nil, err
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ctx := context.Background()
	for done := 0; done < n; done += concurrency {
		ids := make([]string, 0, concurrency)
		for range min(concurrency, n-done) {
			st, err := e.StartExport(ctx, user, &cycleReader{left: 4 << 20}) // 16 s at the rate
			if err != nil {
				return nil, nil, nil, err
			}
			ids = append(ids, st.ID)
		}
		for _, id := range ids { // every one running, a few batches in
			for {
				s, err := e.GetExportStatus(ctx, user, id)
				if err != nil {
					return nil, nil, nil, err
				}
				if s.State == exporter.StatePending && s.BytesCopied > 0 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, len(ids))
		for _, id := range ids {
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond) // anywhere in a throttled batch
			ch := make(chan time.Time, 1)
			mu.Lock()
			stopped[id] = ch
			mu.Unlock()
			t0 := time.Now()
			if _, err := e.CancelExport(ctx, user, id); err != nil {
				return nil, nil, nil, err
			}
			a := time.Since(t0)
			wg.Add(1)
			go func() {
				defer wg.Done()
				var at time.Time
				select {
				case at = <-ch:
				case <-time.After(5 * time.Second):
					errs <- fmt.Errorf("export %s: no cancelled event within 5 s", id)
					return
				}
				for { // polled every 10 ms: the bench must not load what it measures
					if _, err := insp.GetTaskInfo(queue, id); err != nil {
						break
					}
					time.Sleep(10 * time.Millisecond)
				}
				g := time.Since(t0)
				mu.Lock()
				stop, gone, ack = append(stop, at.Sub(t0)), append(gone, g), append(ack, a)
				mu.Unlock()
			}()
		}
		wg.Wait()
		close(errs)
		if err := <-errs; err != nil {
			return nil, nil, nil, err
		}
	}
	return stop, gone, ack, nil
}
