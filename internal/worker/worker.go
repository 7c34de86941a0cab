// Package worker assembles the process that runs exports: an asynq server
// with the export handler and retry policy, and the sweeper of archived
// tasks. cmd/worker, the demo and the tests start it the same way.
package worker

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/storage"
	"github.com/exportsvc/exportsvc/tasks"
)

// Config is a worker's settings. The zero value (but for Redis) works.
type Config struct {
	Queue             string        // default "exports"
	Concurrency       int           // exports run at once; default 8
	MaxRate           int64         // bytes per second per export; 0 is no limit
	BatchBytes        int64         // bytes per append; default tasks.DefaultBatchBytes
	TaskCheckInterval time.Duration // idle poll of the queue; default 100 ms
	DelayedInterval   time.Duration // how often retried tasks are moved back; default 1 s
	SweepInterval     time.Duration // how often archived tasks are swept; default 10 s
	ShutdownTimeout   time.Duration // how long asynq waits for handlers; default 10 s
	Logger            *slog.Logger
	EventHook         func(tasks.Event) // called for every handler event (metrics, tests)
}

// Worker runs exports until Shutdown.
type Worker struct {
	cfg     Config
	rdb     redis.UniversalClient
	srv     *asynq.Server
	handler *tasks.Handler
	sweeper *tasks.Sweeper
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// New builds a worker on rdb, which the caller owns and closes after
// Shutdown.
func New(rdb redis.UniversalClient, cfg Config) *Worker {
	if cfg.Queue == "" {
		cfg.Queue = "exports"
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.TaskCheckInterval <= 0 {
		cfg.TaskCheckInterval = 100 * time.Millisecond
	}
	if cfg.DelayedInterval <= 0 {
		cfg.DelayedInterval = time.Second
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = 10 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Each export carries the TTLs its caller chose; the worker applies those.
	store := storage.New(rdb)
	h := tasks.NewHandler(store, tasks.WithLogger(cfg.Logger), tasks.WithMaxRate(cfg.MaxRate), tasks.WithBatchBytes(cfg.BatchBytes), tasks.WithEventHook(cfg.EventHook))
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   map[string]int{cfg.Queue: 1},
		TaskCheckInterval:        cfg.TaskCheckInterval,
		DelayedTaskCheckInterval: cfg.DelayedInterval,
		ShutdownTimeout:          cfg.ShutdownTimeout,
		RetryDelayFunc:           tasks.RetryDelay,
		IsFailure:                tasks.IsFailure,
		Logger:                   asynqLogger{cfg.Logger.With("component", "asynq")},
		LogLevel:                 asynq.WarnLevel,
	})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	return &Worker{
		cfg: cfg, rdb: rdb, srv: srv, handler: h,
		sweeper: tasks.NewSweeper(insp, store, cfg.Queue, tasks.WithSweepLogger(cfg.Logger)),
	}
}

// Handler returns the worker's export handler.
func (w *Worker) Handler() *tasks.Handler { return w.handler }

// Start checks Redis's eviction policy and starts processing.
func (w *Worker) Start() error {
	CheckEviction(context.Background(), w.rdb, w.cfg.Logger)
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeExport, w.handler)
	if err := w.srv.Start(mux); err != nil {
		return fmt.Errorf("worker: starting asynq server: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.sweeper.Run(ctx, w.cfg.SweepInterval)
	}()
	return nil
}

// Shutdown stops taking tasks, hands running exports back at their next
// batch boundary (no retry spent, picked up again within seconds by
// another worker) and returns once every handler has returned.
func (w *Worker) Shutdown() {
	w.srv.Stop()
	w.handler.Shutdown()
	w.srv.Shutdown()
	w.handler.Wait()
	if w.cancel != nil {
		w.cancel()
	}
	w.wg.Wait()
}

// CheckEviction warns when Redis may evict keys: with any policy but
// noeviction, export and asynq keys can vanish silently.
func CheckEviction(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger) {
	res, err := rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		log.Debug("cannot read maxmemory-policy (CONFIG unavailable); make sure Redis runs with noeviction", "error", err.Error())
		return
	}
	if p := res["maxmemory-policy"]; p != "noeviction" {
		log.Warn("Redis maxmemory-policy is not noeviction: under memory pressure Redis may silently drop export and queue keys; set maxmemory-policy noeviction", "maxmemory_policy", p)
	}
}

// asynqLogger routes asynq's log lines through slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...)) }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...)) }
func (a asynqLogger) Warn(args ...any) {
	msg := strings.TrimSpace(fmt.Sprint(args...))
	if strings.HasPrefix(msg, "revoke task") ||
		strings.Contains(msg, "could not retry lease expired task") && strings.Contains(msg, "NOT FOUND") {
		// Every cancelled or already-ended export revokes its task on
		// purpose (the handler logs the reason); and when two workers'
		// recoverers race for one dead worker's task, the loser finds it
		// gone. Neither needs an operator.
		a.l.Debug(msg)
		return
	}
	a.l.Warn(msg)
}
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...)) }
func (a asynqLogger) Fatal(args ...any) { a.l.Error(fmt.Sprint(args...)) }
