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
	rec := &storage.Record{ID: id, Owner: u.ID, Queue: e.queue, ChunkSize: int64(e.chunkSize)}
	created, err := e.stage(ctx, rec, r)
	if err == nil {
		err = e.enqueue(ctx, id)
	}
	if err != nil {
		if created {
			// Clean up even when ctx is what failed.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if derr := e.store.Discard(cctx, id); derr != nil {
				e.log.Error("could not discard failed export; its keys expire with the active TTL",
					"export_id", id, "error", derr.Error())
			}
		}
		if errors.Is(err, storage.ErrExists) {
			return Status{}, fmt.Errorf("exporter: id generator returned %s, which is taken: fix the generator", id)
		}
		return Status{}, err
	}
	e.log.Info("export started", "event", "started", "export_id", id, "user", u.ID, "bytes", rec.TotalBytes, "chunks", rec.TotalChunks)
	return statusOf(*rec), nil
}

func (e *Exporter) enqueue(ctx context.Context, id string) error {
	task, err := tasks.NewExportTask(id, asynq.Queue(e.queue), asynq.MaxRetry(e.maxRetry), asynq.Timeout(e.taskTimeout))
	if err != nil {
		return err
	}
	if _, err := e.client.EnqueueContext(ctx, task); err != nil {
		return fmt.Errorf("exporter: enqueueing export task: %w", err)
	}
	return nil
}

// batch is one round trip's worth of chunks, read and hashed ahead of the
// Redis write that takes it.
type batch struct {
	buf      *[]byte  // the pooled buffer the chunks live in
	chunks   [][]byte // slices of buf
	err      error    // reader error or size limit, after the chunks
	panicked any      // what r.Read panicked with, if it did
}

// stage reads r to the end in chunks filled by io.ReadFull, creates the
// record and stages the chunks in batches, then seals the record with the
// source's size and SHA-256. Reading and hashing run one batch ahead of
// Redis, so the two overlap. A source that fits in one batch is created,
// staged and sealed in one script. created says whether keys exist that
// a failure must discard.
//
// stage returns as soon as ctx ends, even while r.Read blocks: the reading
// goroutine then exits when that Read returns, without touching Redis, so
// a caller must not reuse r after a failed start (as with an
// http.Request's Body). A panic in r.Read is raised again on the caller's
// goroutine.
func (e *Exporter) stage(ctx context.Context, rec *storage.Record, r io.Reader) (created bool, err error) {
	h := sha256.New()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	batches := make(chan batch, 1)
	// At most three batch buffers per start: one being read, one queued, one
	// being written. They come from a pool shared by all starts, so a 1 GiB
	// start does not allocate 1 GiB and a small one allocates nothing.
	inFlight := make(chan struct{}, 3)
	go e.readBatches(ctx, r, h, inFlight, batches)
	for {
		var b batch
		select {
		case b = <-batches:
		case <-ctx.Done():
			return created, ctx.Err()
		}
		if b.panicked != nil {
			panic(b.panicked)
		}
		if b.err != nil && b.err != io.EOF {
			return created, b.err
		}
		last := b.err == io.EOF
		for _, c := range b.chunks {
			rec.TotalBytes += int64(len(c))
		}
		rec.TotalChunks += int64(len(b.chunks))
		if last {
			rec.SHA256 = hex.EncodeToString(h.Sum(nil))
		}
		if !created {
			if last && len(b.chunks) <= storage.MaxInlineChunks {
				err := e.store.CreateSealed(ctx, rec, b.chunks)
				e.bufs.Put(b.buf)
				if err != nil {
					return false, fmt.Errorf("exporter: creating export: %w", err)
				}
				return true, nil
			}
			if err := e.store.Create(ctx, rec); err != nil {
				return false, fmt.Errorf("exporter: creating export: %w", err)
			}
			created = true
		}
		if err := e.store.Stage(ctx, rec.ID, b.chunks); err != nil {
			return created, fmt.Errorf("exporter: staging source: %w", err)
		}
		e.bufs.Put(b.buf)
		<-inFlight
		if last {
			if err := e.store.Seal(ctx, rec); err != nil {
				return created, fmt.Errorf("exporter: sealing staged source: %w", err)
			}
			return created, nil
		}
	}
}

// readBatches fills batches from r into pooled buffers, at most
// cap(inFlight) at a time, hashing as it goes, until EOF, an error, the
// size limit or ctx's end; then it closes out.
func (e *Exporter) readBatches(ctx context.Context, r io.Reader, h hash.Hash, inFlight chan<- struct{}, out chan<- batch) {
	defer func() {
		if p := recover(); p != nil {
			select {
			case out <- batch{panicked: p}:
			case <-ctx.Done(): // the start has returned; nobody to tell
			}
		}
	}()
	var size int64
	for {
		select {
		case inFlight <- struct{}{}:
		case <-ctx.Done():
			return
		}
		pb := e.bufs.Get().(*[]byte)
		buf := *pb
		b := batch{buf: pb, chunks: make([][]byte, 0, e.stageBatch)}
		for len(b.chunks) < e.stageBatch {
			off := len(b.chunks) * e.chunkSize
			chunk := buf[off : off+e.chunkSize : off+e.chunkSize]
			n, rerr := io.ReadFull(r, chunk)
			if n > 0 {
				size += int64(n)
				if size > e.maxSize {
					b.err = fmt.Errorf("%w: more than %d bytes", ErrTooLarge, e.maxSize)
					break
				}
				h.Write(chunk[:n])
				b.chunks = append(b.chunks, chunk[:n])
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
		case out <- b:
		case <-ctx.Done():
			return
		}
		if b.err != nil {
			return
		}
	}
}
