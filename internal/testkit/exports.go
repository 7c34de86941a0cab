package testkit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
)

// NewExporter returns an exporter on rdb that logs through Logger.
func NewExporter(t testing.TB, rdb redis.UniversalClient, opts ...exporter.Option) *exporter.Exporter {
	t.Helper()
	e, err := exporter.New(rdb, append([]exporter.Option{exporter.WithLogger(Logger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// WaitTerminal polls, as u, until export id is terminal.
func WaitTerminal(t testing.TB, e *exporter.Exporter, u exporter.User, id string, within time.Duration) exporter.Status {
	t.Helper()
	return WaitStatus(t, e, u, id, within, func(st exporter.Status) bool { return st.State.Terminal() })
}

// WaitStatus polls, as u, until ok holds for export id's status.
func WaitStatus(t testing.TB, e *exporter.Exporter, u exporter.User, id string, within time.Duration, ok func(exporter.Status) bool) exporter.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := e.GetExportStatus(context.Background(), u, id)
		if err != nil {
			t.Fatalf("status of %s: %v", id, err)
		}
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("export %s: still %s after %v (%d/%d chunks)", id, st.State, within, st.Chunks, st.TotalChunks)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Download reads, as u, the whole data of a COMPLETE export.
func Download(t testing.TB, e *exporter.Exporter, u exporter.User, id string) []byte {
	t.Helper()
	rc, err := e.OpenExportData(context.Background(), u, id)
	if err != nil {
		t.Fatalf("open data of %s: %v", id, err)
	}
	defer rc.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, rc); err != nil {
		t.Fatalf("download of %s: %v", id, err)
	}
	return b.Bytes()
}

// TaskState returns the asynq state of export id's task, or "" when asynq
// holds no task for it.
func TaskState(t testing.TB, rdb redis.UniversalClient, queue, id string) string {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(queue, id)
	if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("task info of %s: %v", id, err)
	}
	return info.State.String()
}
