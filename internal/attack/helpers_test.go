// Package attack_test holds adversarial tests of the export service: each
// test attacks one contract of DESIGN.md (races, kills, bad input, Redis
// trouble, leaks) against real redis-server processes. Most began as a
// failing test for a bug found this way and stay as regression tests.
package attack_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
)

var (
	alice = exporter.User{ID: "alice", Permissions: []string{exporter.PermissionExport}}
	admin = exporter.User{ID: "root", Permissions: []string{exporter.PermissionAdmin}}
)

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

// enqueuerBinary builds cmd/enqueuer once per test binary.
func enqueuerBinary(t testing.TB) string { return testkit.Binary(t, "cmd/enqueuer") }
