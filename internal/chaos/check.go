package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/storage"
)

// check settles the outcome of every export of the blow against the
// harness's own record of its source.
func (h *harness) check(ctx context.Context, r *BlowResult) {
	for _, e := range r.Exports {
		st, err := h.status(ctx, e)
		switch {
		case errors.Is(err, exporter.ErrNotFound):
			r.Lost++
			r.problem("export %s (%d bytes): LOST, no status record\n%s", e.ID, e.Size, h.diagnose(ctx, e))
			continue
		case err != nil:
			r.Lost++
			r.problem("export %s: status unreadable: %v", e.ID, err)
			continue
		}
		e.Final = st
		if e.Cancel && st.State != exporter.StateCancelled {
			r.OtherBad++
			r.problem("export %s: CancelExport succeeded at %s but the export ended %s", e.ID, e.CancelAt.Format(time.TimeOnly), st.State)
		}
		switch st.State {
		case exporter.StateComplete:
			h.checkComplete(ctx, r, e, st)
		case exporter.StateFailed:
			if st.Error == "" {
				r.OtherBad++
				r.problem("export %s: FAILED without a reason", e.ID)
			} else {
				r.Failed++
				r.note("export %s (%d bytes) FAILED: %s", e.ID, e.Size, st.Error)
			}
		case exporter.StateCancelled:
			if !e.Cancel {
				r.OtherBad++
				r.problem("export %s: CANCELLED, but the harness did not cancel it", e.ID)
			}
			k := storage.KeysFor(e.ID)
			n, err := h.rdb.Exists(ctx, k.Data, k.Source).Result()
			switch {
			case err != nil:
				r.problem("export %s: EXISTS after cancel: %v", e.ID, err)
			case n > 0:
				r.OtherBad++
				r.problem("export %s: CANCELLED but its data or source still exists (%d keys)\n%s", e.ID, n, h.diagnose(ctx, e))
			default:
				r.Cancelled++
			}
		default:
			r.Stuck++
			r.problem("export %s (%d bytes): STUCK %s at the deadline\n%s", e.ID, e.Size, st.State, h.diagnose(ctx, e))
		}
	}
	h.scanTTLs(ctx, r)
}

// status reads an export's status, retrying transient errors for a while.
func (h *harness) status(ctx context.Context, e *export) (exporter.Status, error) {
	var err error
	for range 50 {
		var st exporter.Status
		st, err = h.exps[e.Chunk].GetExportStatus(ctx, chaosUser, e.ID)
		if err == nil || errors.Is(err, exporter.ErrNotFound) {
			return st, err
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return exporter.Status{}, err
}

// checkComplete reads the data chunks straight from Redis (LRANGE) and
// compares their bytes with the source's size and SHA-256.
func (h *harness) checkComplete(ctx context.Context, r *BlowResult, e *export, st exporter.Status) {
	key := storage.KeysFor(e.ID).Data
	n, err := h.rdb.LLen(ctx, key).Result()
	if err != nil {
		r.OtherBad++
		r.problem("export %s: LLEN %s: %v", e.ID, key, err)
		return
	}
	sum := sha256.New()
	var size, chunks int64
	var odd []string
	for start := int64(0); start < n; start += 256 {
		vals, err := h.rdb.LRange(ctx, key, start, start+255).Result()
		if err != nil {
			r.OtherBad++
			r.problem("export %s: LRANGE %s: %v", e.ID, key, err)
			return
		}
		for _, v := range vals {
			if int64(len(v)) != int64(e.Chunk) && chunks != n-1 && len(odd) < 5 {
				odd = append(odd, fmt.Sprintf("chunk %d has %d bytes", chunks, len(v)))
			}
			sum.Write([]byte(v))
			size += int64(len(v))
			chunks++
		}
	}
	got := hex.EncodeToString(sum.Sum(nil))
	wantChunks := (e.Size + int64(e.Chunk) - 1) / int64(e.Chunk)
	switch {
	case size != e.Size || chunks != wantChunks:
		r.DupTrunc++
		r.problem("export %s: COMPLETE with %d bytes in %d chunks, source had %d bytes in %d chunks (%s)\n%s",
			e.ID, size, chunks, e.Size, wantChunks, strings.Join(odd, ", "), h.diagnose(ctx, e))
	case got != e.SHA256:
		r.Corrupted++
		r.problem("export %s: COMPLETE, %d bytes, but SHA-256 %s differs from the source's %s\n%s", e.ID, size, got, e.SHA256, h.diagnose(ctx, e))
	case st.SHA256 != e.SHA256 || st.TotalBytes != e.Size || st.BytesCopied != e.Size || st.Chunks != wantChunks:
		r.Corrupted++
		r.problem("export %s: data is right but the record is not: %+v", e.ID, st)
	default:
		r.Complete++
	}
}

// scanTTLs records every export:* key that has no TTL.
func (h *harness) scanTTLs(ctx context.Context, r *BlowResult) {
	var cursor uint64
	for {
		keys, next, err := h.rdb.Scan(ctx, cursor, "export:*", 1000).Result()
		if err != nil {
			return // Redis restarting: the next scan will see
		}
		if len(keys) > 0 {
			p := h.rdb.Pipeline()
			cmds := make([]*redis.DurationCmd, len(keys))
			for i, k := range keys {
				cmds[i] = p.PTTL(ctx, k)
			}
			if _, err := p.Exec(ctx); err == nil {
				for i, k := range keys {
					if cmds[i].Val() == -1 { // go-redis: -1 is "no TTL", -2 "no key"
						if !r.NoTTL[k] {
							r.NoTTL[k] = true
							r.problem("key %s has no TTL (seen %s)", k, time.Now().Format(time.TimeOnly))
						}
					}
				}
			}
		}
		cursor = next
		if cursor == 0 {
			return
		}
	}
}

// checkTasks waits up to 20 s until no asynq task of an ended export is
// left (a FAILED export's task may stay archived), and notes those left.
func (h *harness) checkTasks(ctx context.Context, r *BlowResult) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		var left []string
		for _, e := range r.Exports {
			info, err := h.insp.GetTaskInfo(queue, e.ID)
			if err != nil || (info.State == asynq.TaskStateArchived && e.Final.State == exporter.StateFailed) {
				continue
			}
			if e.Final.State.Terminal() {
				left = append(left, fmt.Sprintf("%s (%s) task %s retried %d, last error %q", e.ID, e.Final.State, info.State, info.Retried, info.LastErr))
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) || !sleep(ctx, 250*time.Millisecond) {
			r.note("asynq tasks of ended exports still there after 20 s: %s", strings.Join(left, "; "))
			return
		}
	}
}

// diagnose gathers the evidence on one export: its record, its keys'
// lengths and TTLs, its asynq task and the worker log lines about it.
func (h *harness) diagnose(ctx context.Context, e *export) string {
	var b strings.Builder
	k := storage.KeysFor(e.ID)
	rec, err := h.rdb.HGetAll(ctx, k.Status).Result()
	fmt.Fprintf(&b, "    record %s: %v %v\n", k.Status, rec, errOrEmpty(err))
	for _, key := range []string{k.Status, k.Source, k.Data} {
		ttl, _ := h.rdb.PTTL(ctx, key).Result()
		typ, _ := h.rdb.Type(ctx, key).Result()
		n, _ := h.rdb.LLen(ctx, key).Result()
		fmt.Fprintf(&b, "    %s: type %s, llen %d, pttl %v\n", key, typ, n, ttl)
	}
	if info, err := h.insp.GetTaskInfo(queue, e.ID); err != nil {
		fmt.Fprintf(&b, "    asynq task: %v\n", err)
	} else {
		fmt.Fprintf(&b, "    asynq task: state %s, retried %d/%d, last error %q, next process at %s\n",
			info.State, info.Retried, info.MaxRetry, info.LastErr, info.NextProcessAt.Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "    harness: source %d bytes in %d-byte chunks, sha256 %s, cancelled %v\n", e.Size, e.Chunk, e.SHA256, e.Cancel)
	for _, ev := range h.tr.of(e.ID) {
		fmt.Fprintf(&b, "    [%s] %s\n", ev.Worker, ev.Line)
	}
	return strings.TrimRight(b.String(), "\n")
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// forget deletes the blow's export keys once they are checked, so that
// Redis (and its AOF) stays small and the next blow's checks see only
// their own exports.
func (h *harness) forget(ctx context.Context, r *BlowResult) {
	var keys []string
	for _, e := range r.Exports {
		k := storage.KeysFor(e.ID)
		keys = append(keys, k.Status, k.Source, k.Data)
	}
	for i := 0; i < len(keys); i += 300 {
		h.rdb.Del(ctx, keys[i:min(i+300, len(keys))]...)
	}
}
