package exporter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	"github.com/exportsvc/exportsvc/storage"
)

// downloadBatchBytes is about how much one read fetches (at least one
// chunk): what a download holds in memory.
const downloadBatchBytes = 1 << 20

// OpenExportData streams a COMPLETE export's bytes, about 1 MiB of chunks
// at a time (one chunk when chunks are larger), without holding them all
// in memory. The user must own the export
// or hold the admin permission; an export that is not COMPLETE gives
// ErrNotComplete. The reader checks the bytes against the source's size
// and SHA-256 and fails instead of returning io.EOF when they differ
// (for example when the retention TTL ran out mid-download).
func (e *Exporter) OpenExportData(ctx context.Context, u User, id string) (io.ReadCloser, error) {
	rec, err := e.lookup(ctx, u, id)
	if err != nil {
		return nil, err
	}
	if rec.State != storage.Complete {
		return nil, fmt.Errorf("%w: export %s is %s", ErrNotComplete, id, rec.State)
	}
	return &dataReader{ctx: ctx, store: e.store, rec: rec, h: sha256.New()}, nil
}

type dataReader struct {
	ctx    context.Context
	store  *storage.Store
	rec    storage.Record
	h      hash.Hash
	next   int64    // index of the next chunk to fetch
	bytes  int64    // bytes handed out so far
	buf    []string // fetched chunks not yet handed out
	cur    string   // the chunk being handed out
	err    error
	closed bool
}

func (d *dataReader) Read(p []byte) (int, error) {
	if d.closed {
		return 0, fmt.Errorf("exporter: read of closed export data %s", d.rec.ID)
	}
	for len(d.cur) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		if len(d.buf) == 0 {
			d.fill()
			continue
		}
		d.cur, d.buf = d.buf[0], d.buf[1:]
	}
	n := copy(p, d.cur)
	d.h.Write(p[:n])
	d.cur = d.cur[n:]
	d.bytes += int64(n)
	return n, nil
}

// fill fetches the next batch, or settles d.err at the end.
func (d *dataReader) fill() {
	if d.next >= d.rec.TotalChunks {
		d.err = d.verify()
		return
	}
	perFetch := min(max(1, downloadBatchBytes/max(d.rec.ChunkSize, 1)), maxBatchChunks)
	n := min(perFetch, d.rec.TotalChunks-d.next)
	chunks, err := d.store.ReadData(d.ctx, d.rec.ID, d.next, n)
	if err != nil {
		d.err = fmt.Errorf("exporter: reading export %s data: %w", d.rec.ID, err)
		return
	}
	if int64(len(chunks)) != n {
		d.err = fmt.Errorf("exporter: export %s data ended at chunk %d of %d (expired during download?)", d.rec.ID, d.next+int64(len(chunks)), d.rec.TotalChunks)
	}
	d.next += int64(len(chunks))
	d.buf = chunks
}

func (d *dataReader) verify() error {
	if d.bytes != d.rec.TotalBytes {
		return fmt.Errorf("exporter: export %s data has %d bytes, source had %d", d.rec.ID, d.bytes, d.rec.TotalBytes)
	}
	if sum := hex.EncodeToString(d.h.Sum(nil)); sum != d.rec.SHA256 {
		return fmt.Errorf("exporter: export %s data SHA-256 %s differs from the source's %s", d.rec.ID, sum, d.rec.SHA256)
	}
	return io.EOF
}

// Close releases the reader; the export itself is untouched.
func (d *dataReader) Close() error {
	d.closed = true
	d.buf, d.cur = nil, ""
	return nil
}
