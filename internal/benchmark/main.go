// Command benchmark measures the export service against its performance
// targets (docs/design.md) and prints a table. Every figure is a ratio of
// two measurements taken in the same run, on a redis-server it starts
// itself: shared machines drift, ratios much less. Run it with `make bench`.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/redisproc"
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

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
