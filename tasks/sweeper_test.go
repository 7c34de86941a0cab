package tasks_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/storage"
	"github.com/exportsvc/exportsvc/tasks"
)

var (
	ctx   = context.Background()
	alice = exporter.User{ID: "alice", Permissions: []string{exporter.PermissionExport}}
)

type fixture struct {
	rdb     *redis.Client
	e       *exporter.Exporter
	store   *storage.Store
	insp    *asynq.Inspector
	sweeper *tasks.Sweeper
}

// newFixture gives an exporter and a sweeper on one miniredis, and no
// worker: tasks stay where the test puts them.
func newFixture(t *testing.T) fixture {
	_, rdb := testkit.Mini(t)
	e, err := exporter.New(rdb, exporter.WithLogger(testkit.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	store := storage.New(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	return fixture{rdb, e, store, insp, tasks.NewSweeper(insp, store, e.Queue(), tasks.WithSweepLogger(testkit.Logger()))}
}

func (f fixture) start(t *testing.T) string {
	t.Helper()
	st, err := f.e.StartExport(ctx, alice, strings.NewReader("some bytes"))
	if err != nil {
		t.Fatal(err)
	}
	return st.ID
}

// age makes an export look quiet for an hour.
func (f fixture) age(t *testing.T, id string) {
	t.Helper()
	old := strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10)
	if err := f.rdb.HSet(ctx, storage.KeysFor(id).Status, "updated_at", old).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestAnArchivedTaskFailsItsExportWithTheTasksLastError(t *testing.T) {
	f := newFixture(t)
	id := f.start(t)
	if err := f.insp.ArchiveTask(f.e.Queue(), id); err != nil {
		t.Fatal(err)
	}
	res, err := f.sweeper.Sweep(ctx)
	if err != nil || res.Failed != 1 {
		t.Fatalf("sweep: %+v, %v", res, err)
	}
	rec, _ := f.store.Get(ctx, id)
	if rec.State != storage.Failed || !strings.HasPrefix(rec.Error, "task archived") {
		t.Fatalf("record after the sweep: %+v", rec)
	}
	// Kept for operators, and not failed twice.
	if info, err := f.insp.GetTaskInfo(f.e.Queue(), id); err != nil || info.State != asynq.TaskStateArchived {
		t.Fatalf("archived task after the sweep: %+v, %v", info, err)
	}
	if res, _ := f.sweeper.Sweep(ctx); res != (tasks.SweepResult{}) {
		t.Fatalf("second sweep did %+v, want nothing", res)
	}
	testkit.AssertTTLs(t, f.rdb)
}

func TestArchivedTasksOfEndedExportsAreDeleted(t *testing.T) {
	f := newFixture(t)
	cancelled := f.start(t)
	if _, err := f.e.CancelExport(ctx, alice, cancelled); err != nil {
		t.Fatal(err)
	}
	// A cancelled export's task that asynq archived anyway (a last retry).
	task, _ := tasks.NewExportTask(cancelled, asynq.Queue(f.e.Queue()))
	if _, err := asynq.NewClientFromRedisClient(f.rdb).Enqueue(task); err != nil {
		t.Fatal(err)
	}
	if err := f.insp.ArchiveTask(f.e.Queue(), cancelled); err != nil {
		t.Fatal(err)
	}
	res, err := f.sweeper.Sweep(ctx)
	if err != nil || res.Deleted != 1 || res.Failed != 0 {
		t.Fatalf("sweep: %+v, %v", res, err)
	}
	if _, err := f.insp.GetTaskInfo(f.e.Queue(), cancelled); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Fatalf("task of the cancelled export: %v, want gone", err)
	}
	if rec, _ := f.store.Get(ctx, cancelled); rec.State != storage.Cancelled {
		t.Fatalf("cancelled export became %s", rec.State)
	}
}

func TestAnExportWhoseTaskIsGoneIsFailedAsAnOrphan(t *testing.T) {
	f := newFixture(t)
	orphan := f.start(t)
	if err := f.insp.DeleteTask(f.e.Queue(), orphan); err != nil { // an operator, in asynqmon
		t.Fatal(err)
	}
	f.age(t, orphan)
	queued := f.start(t) // its task waits in the queue: not an orphan, however old
	f.age(t, queued)
	young := f.start(t) // just started: its task may not be enqueued yet
	if err := f.insp.DeleteTask(f.e.Queue(), young); err != nil {
		t.Fatal(err)
	}

	res, err := f.sweeper.SweepOrphans(ctx)
	if err != nil || res.Orphans != 1 {
		t.Fatalf("orphan sweep: %+v, %v", res, err)
	}
	if rec, _ := f.store.Get(ctx, orphan); rec.State != storage.Failed || !strings.HasPrefix(rec.Error, "task lost") {
		t.Fatalf("orphan: %+v", rec)
	}
	for _, id := range []string{queued, young} {
		if rec, _ := f.store.Get(ctx, id); rec.State != storage.Created {
			t.Fatalf("export %s became %s", id, rec.State)
		}
	}
	k := storage.KeysFor(orphan)
	if n := f.rdb.Exists(ctx, k.Source, k.Data).Val(); n != 0 {
		t.Fatal("the orphan's source was kept")
	}
	testkit.AssertTTLs(t, f.rdb)
}
