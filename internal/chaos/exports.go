package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/exportsvc/exportsvc/exporter"
)

// export is one export of a blow and what the harness knows of its source.
type export struct {
	ID       string
	Size     int64
	SHA256   string // of the source, computed by the harness
	Chunk    int    // staging chunk size
	Cancel   bool   // CancelExport returned success for it
	CancelAt time.Time
	Final    exporter.Status // the last status read
	Done     bool            // Final is terminal
}

// spec is the plan of one export.
type spec struct {
	size  int64
	chunk int
	seed  uint64
}

// plan draws the sources of a blow: in every eight, a 0-byte one, one
// shorter than a chunk, one of a whole number of chunks, and five long
// enough (a third of MaxSize or more) to be running when the blow falls.
func (h *harness) plan(n int) []spec {
	out := make([]spec, n)
	for i := range out {
		cs := chunkSizes[h.rng.IntN(len(chunkSizes))]
		c := int64(cs)
		var size int64
		switch i % 8 {
		case 0:
			size = 0
		case 1:
			size = 1 + h.rng.Int64N(c-1)
		case 2:
			size = c * (1 + h.rng.Int64N(max(1, h.cfg.MaxSize/c)))
		default:
			lo := h.cfg.MaxSize / 3
			size = lo + h.rng.Int64N(h.cfg.MaxSize-lo+1)
		}
		out[i] = spec{size: size, chunk: cs, seed: h.rng.Uint64()}
	}
	return out
}

// long reports how many planned exports are long ones.
func long(specs []spec, maxSize int64) int {
	n := 0
	for _, s := range specs {
		if s.size >= maxSize/3 {
			n++
		}
	}
	return n
}

// startExports starts the planned exports concurrently, each from random
// bytes whose SHA-256 the harness keeps.
func (h *harness) startExports(ctx context.Context, specs []spec) ([]*export, error) {
	out := make([]*export, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := make([]byte, s.size)
			rand.NewChaCha8(seed32(s.seed)).Read(src)
			sum := sha256.Sum256(src)
			st, err := h.exps[s.chunk].StartExport(ctx, chaosUser, bytes.NewReader(src))
			if err != nil {
				errs[i] = fmt.Errorf("starting an export of %d bytes: %w", s.size, err)
				return
			}
			out[i] = &export{ID: st.ID, Size: s.size, SHA256: hex.EncodeToString(sum[:]), Chunk: s.chunk, Final: st}
		}()
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

func seed32(s uint64) (b [32]byte) {
	for i := range 4 {
		for j := range 8 {
			b[i*8+j] = byte(s >> (8 * j))
		}
		s = s*6364136223846793005 + 1442695040888963407
	}
	return b
}

func ids(exps []*export) []string {
	out := make([]string, len(exps))
	for i, e := range exps {
		out[i] = e.ID
	}
	return out
}

// waitProgress waits up to within until want exports are PENDING with
// bytes copied; it reports whether they were.
func (h *harness) waitProgress(ctx context.Context, exps []*export, want int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for {
		n := 0
		for _, e := range exps {
			st, err := h.exps[e.Chunk].GetExportStatus(ctx, chaosUser, e.ID)
			if err == nil && st.State == exporter.StatePending && st.BytesCopied > 0 {
				n++
			}
		}
		if n >= want {
			return true
		}
		if time.Now().After(deadline) || !sleep(ctx, 50*time.Millisecond) {
			return false
		}
	}
}

// poll reads the status of every export not yet terminal, tolerating
// errors (Redis may be restarting); it reports whether all are terminal.
func (h *harness) poll(ctx context.Context, exps []*export) bool {
	all := true
	for _, e := range exps {
		if e.Done {
			continue
		}
		st, err := h.exps[e.Chunk].GetExportStatus(ctx, chaosUser, e.ID)
		if err == nil {
			e.Final = st
			e.Done = st.State.Terminal()
		}
		all = all && e.Done
	}
	return all
}

// waitTerminal polls the blow's exports until every one is terminal or
// deadline passes, scanning the TTLs of export keys every two seconds on
// the way: every key must carry one at every moment.
func (h *harness) waitTerminal(ctx context.Context, r *BlowResult, deadline time.Time) {
	lastScan := time.Time{}
	for ctx.Err() == nil {
		if time.Since(lastScan) > 2*time.Second {
			h.scanTTLs(ctx, r)
			lastScan = time.Now()
		}
		if h.poll(ctx, r.Exports) || time.Now().After(deadline) {
			return
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// cancelSome cancels up to cfg.Cancels exports that are not terminal,
// preferring those in prefer (the victim's), retrying while Redis is
// unreachable.
func (h *harness) cancelSome(ctx context.Context, r *BlowResult, prefer []string) {
	h.poll(ctx, r.Exports)
	var cands []*export
	for _, pass := range []bool{true, false} {
		for _, e := range r.Exports {
			if !e.Done && e.Size > 0 && slices.Contains(prefer, e.ID) == pass {
				cands = append(cands, e)
			}
		}
	}
	for _, e := range cands[:min(h.cfg.Cancels, len(cands))] {
		deadline := time.Now().Add(20 * time.Second)
		for {
			_, err := h.exps[e.Chunk].CancelExport(ctx, chaosUser, e.ID)
			if err == nil {
				e.Cancel, e.CancelAt = true, time.Now()
				r.note("cancelled %s (%d bytes) %s", e.ID, e.Size, onWorker(slices.Contains(prefer, e.ID)))
				break
			}
			if errors.Is(err, exporter.ErrNotCancellable) {
				r.note("cancel of %s came too late: %v", e.ID, err)
				break
			}
			if time.Now().After(deadline) || !sleep(ctx, 100*time.Millisecond) {
				r.note("cancel of %s did not get through: %v", e.ID, err)
				break
			}
		}
	}
}

func onWorker(victim bool) string {
	if victim {
		return "running on the victim"
	}
	return "running elsewhere"
}
