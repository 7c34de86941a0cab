package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/hibiken/asynq"

	"github.com/exportsvc/exportsvc/storage"
	"github.com/exportsvc/exportsvc/tasks"
)

// StartExport stages everything r yields in Redis and enqueues the task
// that copies it, then returns the CREATED status without waiting for a
// worker. The user needs the start permission. On any failure (reader,
// Redis, size limit, enqueue) it returns an error and leaves no key behind.
func (e *Exporter) StartExport(ctx context.Context, u User, r io.Reader) (Status, error) {
	if u.ID == "" {
		return Status{}, fmt.Errorf("%w: user has no id", ErrPermissionDenied)
	}
	if !e.checker.HasPermission(u, e.startPerm) {
		return Status{}, fmt.Errorf("%w: user %q lacks permission %q", ErrPermissionDenied, u.ID, e.startPerm)
	}
	if r == nil {
		return Status{}, errors.New("exporter: nil reader")
	}
	id := e.newID()
	if !storage.ValidID(id) {
		return Status{}, fmt.Errorf("exporter: id generator returned %.64q, not a canonical UUID: fix the generator", id)
	}
	if err := e.store.Create(ctx, id, u.ID, e.queue, e.chunkSize); err != nil {
		if errors.Is(err, storage.ErrExists) {
			return Status{}, fmt.Errorf("exporter: id generator returned %s, which is taken: fix the generator", id)
		}
		return Status{}, fmt.Errorf("exporter: creating export: %w", err)
	}
	st, err := e.stageAndEnqueue(ctx, id, r)
	if err != nil {
		// Clean up even when ctx is what failed.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if derr := e.store.Discard(cctx, id); derr != nil {
			e.log.Error("could not discard failed export; its keys expire with the active TTL",
				"export_id", id, "error", derr.Error())
		}
		return Status{}, err
	}
	e.log.Info("export started", "event", "started", "export_id", id, "user", u.ID, "bytes", st.TotalBytes, "chunks", st.TotalChunks)
	return st, nil
}

func (e *Exporter) stageAndEnqueue(ctx context.Context, id string, r io.Reader) (Status, error) {
	h := sha256.New()
	total, chunks, err := e.stage(ctx, id, r, h)
	if err != nil {
		return Status{}, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := e.store.Seal(ctx, id, total, chunks, sum); err != nil {
		return Status{}, fmt.Errorf("exporter: sealing staged source: %w", err)
	}
	task, err := tasks.NewExportTask(id, asynq.Queue(e.queue), asynq.MaxRetry(e.maxRetry), asynq.Timeout(e.taskTimeout))
	if err != nil {
		return Status{}, err
	}
	if _, err := e.client.EnqueueContext(ctx, task); err != nil {
		return Status{}, fmt.Errorf("exporter: enqueueing export task: %w", err)
	}
	rec, err := e.store.Get(ctx, id)
	if err != nil {
		return Status{}, fmt.Errorf("exporter: reading export %s after enqueue: %w", id, err)
	}
	return statusOf(rec), nil
}

// batch is one round trip's worth of chunks, read and hashed ahead of the
// Redis write that takes it.
type batch struct {
	chunks [][]byte
	err    error // reader error or size limit, after the chunks
}

// stage reads r to the end in chunks filled by io.ReadFull and writes them
// in batches. Reading and hashing run one batch ahead of Redis, so the two
// overlap.
func (e *Exporter) stage(ctx context.Context, id string, r io.Reader, h hash.Hash) (total, chunks int64, err error) {
	ctx, cancel := context.WithCancel(ctx)
	batches := make(chan batch, 1)
	defer func() {
		// The reader goroutine must be gone before the caller gets r back.
		cancel()
		for range batches {
		}
	}()
	go func() {
		defer close(batches)
		var size int64
		for {
			b := batch{chunks: make([][]byte, 0, e.stageBatch)}
			for len(b.chunks) < e.stageBatch {
				buf := make([]byte, e.chunkSize)
				n, rerr := io.ReadFull(r, buf)
				if n > 0 {
					size += int64(n)
					if size > e.maxSize {
						b.err = fmt.Errorf("%w: more than %d bytes", ErrTooLarge, e.maxSize)
						break
					}
					h.Write(buf[:n])
					b.chunks = append(b.chunks, buf[:n])
				}
				if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
					b.err = io.EOF
					break
				}
				if rerr != nil {
					b.err = fmt.Errorf("exporter: reading source: %w", rerr)
					break
				}
			}
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
			if b.err != nil {
				return
			}
		}
	}()
	for b := range batches {
		if len(b.chunks) > 0 && (b.err == nil || b.err == io.EOF) {
			if err := e.store.Stage(ctx, id, b.chunks); err != nil {
				return 0, 0, fmt.Errorf("exporter: staging source: %w", err)
			}
			for _, c := range b.chunks {
				total += int64(len(c))
			}
			chunks += int64(len(b.chunks))
		}
		if b.err == io.EOF {
			return total, chunks, nil
		}
		if b.err != nil {
			return 0, 0, b.err
		}
	}
	return 0, 0, ctx.Err()
}
