// Package attack_test holds adversarial tests of the export service: each
// test attacks one contract of DESIGN.md (../../../shared/DESIGN.md). A
// failing test here is a confirmed bug; its comment says what should
// happen instead. Passing tests record attacks that found nothing.
package attack_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
)

var (
	alice = exporter.User{ID: "alice", Permissions: []string{exporter.PermissionExport}}
	admin = exporter.User{ID: "root", Permissions: []string{exporter.PermissionAdmin}}
)

func newExporter(t testing.TB, rdb redis.UniversalClient, opts ...exporter.Option) *exporter.Exporter {
	t.Helper()
	e, err := exporter.New(rdb, append([]exporter.Option{exporter.WithLogger(testkit.Logger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func randomBytes(n int, seed uint64) []byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// waitTerminal polls until the export is terminal.
func waitTerminal(t testing.TB, e *exporter.Exporter, id string, within time.Duration) exporter.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := e.GetExportStatus(context.Background(), admin, id)
		if err != nil {
			t.Fatalf("status of %s: %v", id, err)
		}
		if st.State.Terminal() {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("export %s still %s after %v (%d/%d chunks)", id, st.State, within, st.Chunks, st.TotalChunks)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitChunks polls until the export has copied at least n chunks.
func waitChunks(t testing.TB, e *exporter.Exporter, id string, n int64, within time.Duration) exporter.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := e.GetExportStatus(context.Background(), admin, id)
		if err != nil {
			t.Fatalf("status of %s: %v", id, err)
		}
		if st.Chunks >= n || st.State.Terminal() {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("export %s: %d chunks after %v, want %d", id, st.Chunks, within, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func download(t testing.TB, e *exporter.Exporter, id string) []byte {
	t.Helper()
	rc, err := e.OpenExportData(context.Background(), admin, id)
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

// taskState returns the asynq state of the export's task, or "" when
// asynq holds no task for it.
func taskState(t testing.TB, rdb redis.UniversalClient, queue, id string) string {
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

var (
	enqOnce sync.Once
	enqPath string
	enqErr  error
)

// enqueuerBinary builds cmd/enqueuer once per test binary.
func enqueuerBinary(t testing.TB) string {
	t.Helper()
	enqOnce.Do(func() {
		dir, err := os.MkdirTemp("", "attack-enqueuer-")
		if err != nil {
			enqErr = err
			return
		}
		enqPath = filepath.Join(dir, "enqueuer")
		out, err := exec.Command("go", "build", "-o", enqPath, "github.com/exportsvc/exportsvc/cmd/enqueuer").CombinedOutput()
		if err != nil {
			enqErr = errors.New(err.Error() + "\n" + string(out))
		}
	})
	if enqErr != nil {
		t.Fatalf("building cmd/enqueuer: %v", enqErr)
	}
	return enqPath
}
