package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/cliutil"
	"github.com/exportsvc/exportsvc/internal/redisproc"
)

// queue is the asynq queue the harness's exporters and workers share.
const queue = "exports"

// recoverAfter is how long after a worker dies or freezes a newly started
// worker's start-up recoverer takes its tasks back at once: asynq's lease
// (30 s, extended every 5 s) must have lapsed 30 s before (recoverer.go's
// cutoff), so 60 s after the last extension at the latest, plus a second.
const recoverAfter = 61 * time.Second

// Config is one chaos run.
type Config struct {
	Kinds       []Kind    // the blows, in order
	Exports     int       // exports in flight per blow
	MaxSize     int64     // largest source, bytes
	Rate        int64     // each worker's --max-rate, bytes per second per export
	Concurrency int       // each worker's --concurrency
	Workers     int       // worker processes kept running
	Cancels     int       // exports cancelled per blow, around the blow
	Seed        uint64    // sizes, contents, chunk sizes, victims and moments
	Keep        bool      // keep the temp dir (it is kept anyway when something is bad)
	Out         io.Writer // progress lines
}

// DefaultConfig is what `make chaos` runs, but for the blows.
func DefaultConfig() Config {
	return Config{Exports: 16, MaxSize: 4 << 20, Rate: 256 << 10, Concurrency: 8, Workers: 3, Cancels: 1, Out: os.Stderr}
}

// harness owns the redis-server, the worker processes and the exporters
// of one run.
type harness struct {
	cfg   Config
	dir   string
	rng   *rand.Rand
	srv   *redisproc.Server
	rdb   *redis.Client
	insp  *asynq.Inspector
	exps  map[int]*exporter.Exporter // by chunk size
	bin   string
	tr    *tracker
	start time.Time

	mu    sync.Mutex
	procs []*workerProc // every worker process started, for cleanup
	pool  []*workerProc // the workers kept running, one per slot
	seq   int           // names worker processes w1, w2, ...
}

var chaosUser = exporter.User{ID: "chaos", Permissions: []string{exporter.PermissionExport}}

// chunkSizes are the staging chunk sizes the exports mix.
var chunkSizes = []int{4 << 10, 64 << 10}

// Run deals cfg's blows one after the other and checks every export of
// each. It returns an error only when the harness itself cannot go on;
// bad outcomes are in the summary.
func Run(ctx context.Context, cfg Config) (sum *Summary, err error) {
	sum = &Summary{Seed: cfg.Seed, Started: time.Now()}
	h, err := newHarness(ctx, cfg)
	if h != nil {
		sum.Dir = h.dir
		defer func() {
			h.close()
			sum.Elapsed = time.Since(sum.Started)
			if cfg.Keep || err != nil || len(sum.Bad()) > 0 {
				sum.Kept = true
			} else {
				os.RemoveAll(h.dir)
			}
		}()
	}
	if err != nil {
		return sum, err
	}
	for i, k := range cfg.Kinds {
		if ctx.Err() != nil {
			return sum, ctx.Err()
		}
		r, err := h.blow(ctx, i+1, k)
		if r != nil {
			sum.Blows = append(sum.Blows, r)
			h.logf("%s", r.line())
		}
		if err != nil {
			return sum, fmt.Errorf("blow %d (%s): %w", i+1, k, err)
		}
	}
	return sum, nil
}

func newHarness(ctx context.Context, cfg Config) (*harness, error) {
	dir, err := os.MkdirTemp("", "export-chaos-")
	if err != nil {
		return nil, err
	}
	h := &harness{cfg: cfg, dir: dir, tr: newTracker(), start: time.Now(),
		rng: rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)), exps: map[int]*exporter.Exporter{}}
	if cfg.Out == nil {
		h.cfg.Out = io.Discard
	}
	logf, err := os.Create(filepath.Join(dir, "harness.log"))
	if err != nil {
		return h, err
	}
	log := cliutil.NewLogger(logf, slog.LevelInfo)
	cliutil.RouteRedisLogs(log, slog.LevelWarn)

	redisDir := filepath.Join(dir, "redis")
	if err := os.Mkdir(redisDir, 0o755); err != nil {
		return h, err
	}
	h.srv, err = redisproc.Start(redisDir, "--appendonly", "yes", "--appendfsync", "always")
	if err != nil {
		return h, err
	}
	h.rdb = redis.NewClient(&redis.Options{Addr: h.srv.Addr, PoolSize: 32})
	h.insp = asynq.NewInspectorFromRedisClient(h.rdb)
	for _, cs := range chunkSizes {
		e, err := exporter.New(h.rdb, exporter.WithChunkSize(cs), exporter.WithQueue(queue), exporter.WithLogger(log))
		if err != nil {
			return h, err
		}
		h.exps[cs] = e
	}
	h.logf("temp dir %s, redis-server %s (AOF, appendfsync always), seed %d; building cmd/worker", dir, h.srv.Addr, cfg.Seed)
	h.bin = filepath.Join(dir, "worker")
	build := exec.CommandContext(ctx, "go", "build", "-o", h.bin, "github.com/exportsvc/exportsvc/cmd/worker")
	if out, err := build.CombinedOutput(); err != nil {
		return h, fmt.Errorf("building cmd/worker: %v\n%s", err, out)
	}
	for range cfg.Workers {
		w, err := h.startWorker(h.nextName())
		if err != nil {
			return h, err
		}
		h.pool = append(h.pool, w)
	}
	h.logf("%d workers running (--concurrency %d, --max-rate %d B/s, --shutdown-timeout 10s)", cfg.Workers, cfg.Concurrency, cfg.Rate)
	return h, nil
}

func (h *harness) nextName() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seq++
	return fmt.Sprintf("w%d", h.seq)
}

// close stops every worker still running (SIGCONT first, in case one is
// frozen), then Redis.
func (h *harness) close() {
	h.mu.Lock()
	procs := append([]*workerProc(nil), h.procs...)
	h.mu.Unlock()
	for _, w := range procs {
		if w.alive() {
			w.signal(syscall.SIGCONT)
			w.signal(syscall.SIGTERM)
		}
	}
	for _, w := range procs {
		if !w.wait(15 * time.Second) {
			w.signal(syscall.SIGKILL)
			w.wait(5 * time.Second)
		}
	}
	if h.rdb != nil {
		h.rdb.Close()
	}
	if h.srv != nil {
		h.srv.Kill()
	}
}

// replace starts a new worker in slot i of the pool.
func (h *harness) replace(i int) (*workerProc, error) {
	w, err := h.startWorker(h.nextName())
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	h.pool[i] = w
	h.mu.Unlock()
	return w, nil
}

// healPool restarts pool workers that exited without the harness meaning
// them to: that is a bad outcome of the blow.
func (h *harness) healPool(r *BlowResult) error {
	for i, w := range h.pool {
		if w.alive() {
			continue
		}
		r.problem("worker %s exited unexpectedly (%s); last lines of %s:\n%s", w.name, w.exitStatus(), w.logPath, tail(w.logPath, 10))
		r.OtherBad++
		if _, err := h.replace(i); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) logf(format string, args ...any) {
	fmt.Fprintf(h.cfg.Out, "chaos %6.1fs  %s\n", time.Since(h.start).Seconds(), fmt.Sprintf(format, args...))
}

// sleep waits d or until ctx is done, and reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// jitter returns a random duration in [0, d).
func (h *harness) jitter(d time.Duration) time.Duration { return time.Duration(h.rng.Int64N(int64(d))) }
