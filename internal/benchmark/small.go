package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/worker"
	"github.com/exportsvc/exportsvc/tasks"
)

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
