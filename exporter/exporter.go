// Package exporter is the Go API other services use to export a stream of
// bytes for a user: StartExport stages the bytes in Redis and enqueues an
// asynq task; a worker (cmd/worker) copies them; callers poll
// GetExportStatus, read the result with OpenExportData, or CancelExport.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/storage"
	"github.com/exportsvc/exportsvc/tasks"
)

// Defaults of an Exporter.
const (
	DefaultQueue       = "exports"
	DefaultChunkSize   = 64 << 10
	DefaultMaxSize     = 4 << 30
	DefaultTaskTimeout = 6 * time.Hour
)

// maxBatchChunks bounds the chunks of one staging or download round trip,
// so that tiny chunks cannot make a command or a slice huge.
const maxBatchChunks = 4096

// Exporter starts, reads and cancels exports. Build it with New; it is safe
// for concurrent use.
type Exporter struct {
	rdb          redis.UniversalClient
	store        *storage.Store
	client       *asynq.Client
	inspector    *asynq.Inspector
	log          *slog.Logger
	checker      PermissionChecker
	startPerm    string
	adminPerm    string
	newID        func() string
	queue        string
	chunkSize    int
	stageBatch   int
	maxSize      int64
	maxRetry     int
	taskTimeout  time.Duration
	activeTTL    time.Duration
	retentionTTL time.Duration
	bufs         sync.Pool                            // *[]byte of stageBatch*chunkSize bytes
	stopTask     func(queue, id string, running bool) // test seam around asynq's task cancellation
}

// Option configures an Exporter.
type Option func(*Exporter)

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(e *Exporter) { e.log = l } }

// WithPermissionChecker replaces the default ListChecker.
func WithPermissionChecker(c PermissionChecker) Option { return func(e *Exporter) { e.checker = c } }

// WithStartPermission names the permission needed to start an export
// (default PermissionExport).
func WithStartPermission(p string) Option { return func(e *Exporter) { e.startPerm = p } }

// WithAdminPermission names the permission that reads and cancels anyone's
// exports (default PermissionAdmin).
func WithAdminPermission(p string) Option { return func(e *Exporter) { e.adminPerm = p } }

// WithIDGenerator replaces the random UUID v4 generator. Generated ids are
// validated, and a repeated id fails StartExport instead of mixing exports.
func WithIDGenerator(f func() string) Option { return func(e *Exporter) { e.newID = f } }

// WithQueue sets the asynq queue exports are enqueued on (default "exports").
func WithQueue(q string) Option { return func(e *Exporter) { e.queue = q } }

// WithChunkSize sets the staging chunk size in bytes (default 64 KiB).
func WithChunkSize(n int) Option { return func(e *Exporter) { e.chunkSize = n } }

// WithMaxSize sets the largest source StartExport accepts (default 4 GiB).
func WithMaxSize(n int64) Option { return func(e *Exporter) { e.maxSize = n } }

// WithMaxRetry sets how often a failed attempt is retried (default
// tasks.DefaultMaxRetry).
func WithMaxRetry(n int) Option { return func(e *Exporter) { e.maxRetry = n } }

// WithTaskTimeout bounds one attempt (default 6 h). An attempt that runs
// out of time is retried and resumes where it stopped.
func WithTaskTimeout(d time.Duration) Option { return func(e *Exporter) { e.taskTimeout = d } }

// WithActiveTTL sets the TTL of a queued or running export's keys (default
// 24 h). Workers must use the same value.
func WithActiveTTL(d time.Duration) Option { return func(e *Exporter) { e.activeTTL = d } }

// WithRetentionTTL sets how long a finished export is kept (default 1 h).
func WithRetentionTTL(d time.Duration) Option { return func(e *Exporter) { e.retentionTTL = d } }

// New returns an Exporter on rdb, which the caller owns and closes.
func New(rdb redis.UniversalClient, opts ...Option) (*Exporter, error) {
	e := &Exporter{
		rdb: rdb, log: slog.Default(), checker: ListChecker{},
		startPerm: PermissionExport, adminPerm: PermissionAdmin,
		newID: func() string { return uuid.NewString() }, queue: DefaultQueue,
		chunkSize: DefaultChunkSize, maxSize: DefaultMaxSize, maxRetry: tasks.DefaultMaxRetry,
		taskTimeout: DefaultTaskTimeout, activeTTL: storage.DefaultActiveTTL, retentionTTL: storage.DefaultRetentionTTL,
	}
	for _, o := range opts {
		o(e)
	}
	switch {
	case rdb == nil:
		return nil, fmt.Errorf("exporter: nil Redis client")
	case e.chunkSize <= 0 || e.chunkSize > 64<<20:
		return nil, fmt.Errorf("exporter: chunk size %d out of range (1 B to 64 MiB)", e.chunkSize)
	case e.maxSize <= 0:
		return nil, fmt.Errorf("exporter: size limit %d must be positive", e.maxSize)
	case e.maxRetry < 0:
		return nil, fmt.Errorf("exporter: max retry %d must not be negative", e.maxRetry)
	case e.queue == "":
		return nil, fmt.Errorf("exporter: empty queue name")
	case e.checker == nil || e.newID == nil || e.log == nil:
		return nil, fmt.Errorf("exporter: nil permission checker, id generator or logger")
	case e.activeTTL < time.Second || e.retentionTTL < time.Second:
		return nil, fmt.Errorf("exporter: active TTL %v and retention TTL %v must be at least 1s", e.activeTTL, e.retentionTTL)
	case tasks.MaxBackoff(e.maxRetry) >= e.activeTTL:
		return nil, fmt.Errorf("exporter: %d retries may wait up to %v between attempts, longer than the active TTL %v: the export would expire while its task waits; lower WithMaxRetry or raise WithActiveTTL",
			e.maxRetry, tasks.MaxBackoff(e.maxRetry).Round(time.Second), e.activeTTL)
	}
	// Stage about 4 MiB of chunks per round trip: fewer, larger MULTIs
	// measured faster than 1 MiB ones (make bench).
	e.stageBatch = min(max(1, (4<<20)/e.chunkSize), maxBatchChunks)
	size := e.stageBatch * e.chunkSize
	e.bufs.New = func() any { b := make([]byte, size); return &b }
	e.store = storage.New(rdb, storage.WithActiveTTL(e.activeTTL), storage.WithRetentionTTL(e.retentionTTL))
	e.client = asynq.NewClientFromRedisClient(rdb)
	e.inspector = asynq.NewInspectorFromRedisClient(rdb)
	e.stopTask = e.stopAsynqTask
	return e, nil
}

// Queue returns the asynq queue the exporter enqueues on.
func (e *Exporter) Queue() string { return e.queue }

// lookup validates id, loads the record and checks that u may see it.
func (e *Exporter) lookup(ctx context.Context, u User, id string) (storage.Record, error) {
	if !storage.ValidID(id) {
		return storage.Record{}, fmt.Errorf("%w: %.64q", ErrInvalidID, id)
	}
	rec, err := e.store.Get(ctx, id)
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return rec, fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return rec, fmt.Errorf("exporter: reading export %s: %w", id, err)
	}
	if rec.Staging {
		// Its StartExport has not returned: nobody may know this id yet.
		return storage.Record{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if u.ID == "" || (rec.Owner != u.ID && !e.checker.HasPermission(u, e.adminPerm)) {
		return storage.Record{}, fmt.Errorf("%w: user %q does not own export %s and lacks %q", ErrPermissionDenied, u.ID, id, e.adminPerm)
	}
	return rec, nil
}

// GetExportStatus returns the status of export id. The user must own it or
// hold the admin permission.
func (e *Exporter) GetExportStatus(ctx context.Context, u User, id string) (Status, error) {
	rec, err := e.lookup(ctx, u, id)
	if err != nil {
		return Status{}, err
	}
	return statusOf(rec), nil
}
