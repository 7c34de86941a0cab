package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/exportsvc/exportsvc/storage"
)

// Sweeper settles exports that no task will finish. asynq archives a task
// without running its handler when the last attempt's worker died (lease
// expired) or when a handed-back task had no retry left; the export would
// stay PENDING until its TTL. The sweeper fails such exports with the
// task's last error, puts handed-back ones back in the queue, and deletes
// archived tasks of cancelled or finished exports. Less often it looks for
// orphans: queued or running exports whose task is gone altogether (an
// operator deleted it, or Redis lost it in a crash) and fails them.
type Sweeper struct {
	insp  *asynq.Inspector
	store *storage.Store
	queue string
	log   *slog.Logger
}

// SweeperOption configures a Sweeper.
type SweeperOption func(*Sweeper)

// WithSweepLogger sets the sweeper's logger (default slog.Default()).
func WithSweepLogger(l *slog.Logger) SweeperOption { return func(s *Sweeper) { s.log = l } }

// NewSweeper returns a sweeper of queue's archived export tasks.
func NewSweeper(insp *asynq.Inspector, store *storage.Store, queue string, opts ...SweeperOption) *Sweeper {
	s := &Sweeper{insp: insp, store: store, queue: queue, log: slog.Default()}
	for _, o := range opts {
		o(s)
	}
	return s
}

// SweepResult counts what one sweep did.
type SweepResult struct {
	Failed   int // exports ended FAILED
	Requeued int // handed-back tasks put back in the queue
	Deleted  int // archived tasks of ended exports removed
	Orphans  int // exports failed because their task was gone
}

// orphanAge is how long an export must have been quiet before a missing
// task makes it an orphan: StartExport writes the record a moment before
// it enqueues the task.
const orphanAge = time.Minute

// orphanEvery is how many archive sweeps go by between two orphan sweeps,
// which scan the keyspace.
const orphanEvery = 30

// Run sweeps every interval until ctx is done.
func (s *Sweeper) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; ; i++ {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sweep of archived export tasks failed", "error", err.Error())
		}
		if i%orphanEvery == 0 {
			if _, err := s.SweepOrphans(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("sweep of orphaned exports failed", "error", err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maxSweep bounds one sweep; asynq keeps at most 10,000 archived tasks.
const maxSweep = 10000

// Sweep settles every archived export task once.
func (s *Sweeper) Sweep(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	var archived []*asynq.TaskInfo
	for page := 1; len(archived) < maxSweep; page++ {
		infos, err := s.insp.ListArchivedTasks(s.queue, asynq.PageSize(500), asynq.Page(page))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("listing archived tasks: %w", err)
		}
		archived = append(archived, infos...)
		if len(infos) < 500 {
			break
		}
	}
	for _, t := range archived {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if t.Type != TypeExport || !storage.ValidID(t.ID) {
			continue
		}
		if err := s.settle(ctx, t, &res); err != nil {
			s.log.Warn("could not settle archived export task", "export_id", t.ID, "error", err.Error())
		}
	}
	return res, nil
}

func (s *Sweeper) settle(ctx context.Context, t *asynq.TaskInfo, res *SweepResult) error {
	rec, err := s.store.Get(ctx, t.ID)
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return s.delete(t, res)
	case err != nil:
		return err
	case rec.State == storage.Cancelled || rec.State == storage.Complete:
		return s.delete(t, res)
	case rec.State == storage.Failed:
		return nil // kept for operators to see in the archive
	}
	if handedBack(t.LastErr) {
		if err := s.insp.RunTask(s.queue, t.ID); err != nil {
			return err
		}
		res.Requeued++
		s.log.Info("handed-back export task requeued", "event", "requeued", "export_id", t.ID)
		return nil
	}
	reason := "task archived: " + t.LastErr
	if err := s.store.Fail(ctx, t.ID, 0, reason); err != nil {
		if _, ok := storage.IsState(err); ok {
			return nil // ended meanwhile
		}
		return err
	}
	res.Failed++
	s.log.Error("export failed", "event", "failed", "export_id", t.ID, "reason", reason)
	return nil
}

func (s *Sweeper) delete(t *asynq.TaskInfo, res *SweepResult) error {
	if err := s.insp.DeleteTask(s.queue, t.ID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
		return err
	}
	res.Deleted++
	return nil
}

// handedBack reports whether an archived task's last error was a
// hand-back (shutdown or cancelled context), not a failure of the export.
func handedBack(lastErr string) bool {
	return strings.Contains(lastErr, ErrShutdown.Error()) || strings.Contains(lastErr, context.Canceled.Error())
}

// SweepOrphans fails every queued or running export of the sweeper's queue
// that has been quiet for a minute and has no asynq task in any state.
func (s *Sweeper) SweepOrphans(ctx context.Context) (SweepResult, error) {
	var res SweepResult
	err := s.store.ForEachExport(ctx, func(id string) error {
		rec, err := s.store.Get(ctx, id)
		if err != nil || rec.State.Terminal() || rec.Staging || rec.Queue != s.queue || time.Since(rec.UpdatedAt) < orphanAge {
			return nil // gone meanwhile, ended, still starting, another queue's, or busy
		}
		_, err = s.insp.GetTaskInfo(s.queue, id)
		if err == nil || !(errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound)) {
			return nil // its task exists (or asynq cannot say): not an orphan
		}
		reason := "task lost: no asynq task exists for this export (deleted by an operator, or lost by Redis)"
		if err := s.store.Fail(ctx, id, 0, reason); err != nil {
			return nil // ended meanwhile
		}
		res.Orphans++
		s.log.Error("export failed", "event", "failed", "export_id", id, "reason", reason)
		return nil
	})
	return res, err
}
