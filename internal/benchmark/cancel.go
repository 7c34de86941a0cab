package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/worker"
	"github.com/exportsvc/exportsvc/tasks"
)

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
