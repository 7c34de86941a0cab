// Command worker runs exports: it is the asynq server of the export
// service, and scales by running more of it. It only turns flags into an
// internal/worker.Config; see README.md for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/exportsvc/exportsvc/internal/cliutil"
	"github.com/exportsvc/exportsvc/internal/metrics"
	"github.com/exportsvc/exportsvc/internal/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// go-redis has one logger per process: route it through the worker's
	// JSON log, at the level --log-level sets.
	level := new(slog.LevelVar)
	cliutil.RouteRedisLogs(cliutil.NewLogger(os.Stderr, level), slog.LevelWarn)
	os.Exit(run(ctx, stop, level, os.Args[1:], os.Stderr))
}

// env maps each flag to the environment variable that stands in for it.
var env = map[string]string{
	"redis":            "REDIS_URL",
	"queue":            "EXPORT_QUEUE",
	"concurrency":      "WORKER_CONCURRENCY",
	"max-rate":         "EXPORT_MAX_RATE",
	"shutdown-timeout": "WORKER_SHUTDOWN_TIMEOUT",
	"log-level":        "LOG_LEVEL",
	"metrics-addr":     "WORKER_METRICS_ADDR",
}

// run parses args, runs the worker until ctx is done and returns the exit
// code: 0 after a clean shutdown, 2 for a usage error, 1 otherwise.
// unsignal is called once ctx is done, so that a second signal kills the
// process at once instead of waiting for the shutdown.
// logLevel receives the level of --log-level.
func run(ctx context.Context, unsignal func(), logLevel *slog.LevelVar, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	redisURL := fs.String("redis", cliutil.DefaultRedisURL, "Redis URL, redis:// or rediss:// (env REDIS_URL)")
	queue := fs.String("queue", "exports", "asynq queue to take exports from (env EXPORT_QUEUE)")
	concurrency := fs.Int("concurrency", 8, "exports run at once (env WORKER_CONCURRENCY)")
	var maxRate cliutil.Bytes
	fs.Var(&maxRate, "max-rate", "bytes per second per export, e.g. 1048576 or 1MiB; 0 is no limit (env EXPORT_MAX_RATE)")
	shutdownTimeout := fs.Duration("shutdown-timeout", 10*time.Second, "how long a shutdown waits for running exports before asynq requeues them (env WORKER_SHUTDOWN_TIMEOUT)")
	level := cliutil.Level{}
	fs.Var(&level, "log-level", "debug, info, warn or error (env LOG_LEVEL)")
	metricsAddr := fs.String("metrics-addr", "", "serve Prometheus metrics on http://ADDR/metrics, e.g. :9090; empty is off (env WORKER_METRICS_ADDR)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: worker [flags]\n\nRuns exports from the asynq queue until SIGINT or SIGTERM.\n\nflags:\n")
		fs.PrintDefaults()
	}
	fs.SetOutput(io.Discard) // flag would print its error before the usage
	err := fs.Parse(args)
	fs.SetOutput(stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return 0
	case err != nil:
		fs.Usage()
		fmt.Fprintf(stderr, "worker: %s\n", cliutil.OneLine(err.Error()))
		return 2
	}
	if err := cliutil.ApplyEnv(fs, env); err != nil {
		fmt.Fprintf(stderr, "worker: %s\n", cliutil.Message(err))
		return 2
	}
	switch {
	case fs.NArg() > 0:
		fs.Usage()
		fmt.Fprintf(stderr, "worker: unexpected argument %s\n", cliutil.QuoteArg(fs.Arg(0)))
		return 2
	case *concurrency <= 0:
		fmt.Fprintf(stderr, "worker: --concurrency must be positive, not %d\n", *concurrency)
		return 2
	case *shutdownTimeout < 0:
		fmt.Fprintf(stderr, "worker: --shutdown-timeout must not be negative\n")
		return 2
	}
	logLevel.Set(level.Level)
	log := cliutil.NewLogger(stderr, logLevel)
	rdb, err := cliutil.OpenRedis(ctx, *redisURL, 10*time.Second)
	if err != nil {
		log.Error("worker cannot start", "error", cliutil.Message(err))
		if errors.Is(err, cliutil.ErrUsage) {
			return 2
		}
		return 1
	}
	defer rdb.Close()

	var counters metrics.Counters
	w := worker.New(rdb, worker.Config{
		Queue:           *queue,
		Concurrency:     *concurrency,
		MaxRate:         int64(maxRate),
		ShutdownTimeout: *shutdownTimeout,
		Logger:          log,
		EventHook:       counters.Observe,
	})
	var metricsSrv *http.Server
	if *metricsAddr != "" {
		l, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			log.Error("worker cannot start", "error", fmt.Sprintf("metrics: cannot listen on %s: %v", *metricsAddr, err))
			return 1
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", &counters)
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go metricsSrv.Serve(l)
		defer metricsSrv.Close()
		log.Info("serving metrics", "url", "http://"+l.Addr().String()+"/metrics")
	}
	if err := w.Start(); err != nil {
		log.Error("worker cannot start", "error", err.Error())
		return 1
	}
	log.Info("worker started", "redis", cliutil.RedactURL(*redisURL), "queue", *queue,
		"concurrency", *concurrency, "max_rate", int64(maxRate), "pid", os.Getpid())

	<-ctx.Done()
	unsignal()
	log.Info("worker shutting down: running exports are handed back at their next batch", "signal", context.Cause(ctx).Error())
	start := time.Now()
	w.Shutdown()
	log.Info("worker stopped", "shutdown_ms", time.Since(start).Milliseconds())
	return 0
}
