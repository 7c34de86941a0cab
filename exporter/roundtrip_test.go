package exporter_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/internal/worker"
)

var (
	alice = exporter.User{ID: "alice", Permissions: []string{exporter.PermissionExport}}
	bob   = exporter.User{ID: "bob", Permissions: []string{exporter.PermissionExport}}
	admin = exporter.User{ID: "root", Permissions: []string{exporter.PermissionAdmin}}
)

func sum(b []byte) string { h := sha256.Sum256(b); return hex.EncodeToString(h[:]) }

func TestRoundTripIsByteIdentical(t *testing.T) {
	text := strings.Repeat("the quick brown fox jumps over the lazy dog, line after line\n", 3000)
	allBytes := make([]byte, 256*40)
	for i := range allBytes {
		allBytes[i] = byte(i)
	}
	utf8 := strings.Repeat("héllo wörld ✓ 日本語 🙂", 500) // 2-, 3- and 4-byte runes
	inputs := map[string][]byte{
		"ascii text":         []byte(text),
		"empty":              {},
		"every byte value":   allBytes,
		"utf-8 across chunk": []byte(utf8),
		"one byte":           {'x'},
	}
	if b, err := os.ReadFile("../../shared/fixtures/myexport.txt"); err == nil {
		inputs["original sample"] = b
	}
	for _, chunk := range []int{7, 1024, exporter.DefaultChunkSize} {
		for name, in := range inputs {
			t.Run(name+"/chunk "+itoa(chunk), func(t *testing.T) {
				t.Parallel()
				_, rdb := testkit.Mini(t)
				e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(chunk))
				testkit.StartWorker(t, rdb, worker.Config{})
				st, err := e.StartExport(context.Background(), alice, bytes.NewReader(in))
				if err != nil {
					t.Fatal(err)
				}
				if st.State != exporter.StateCreated || st.TotalBytes != int64(len(in)) || st.SHA256 != sum(in) {
					t.Fatalf("start status = %+v, want CREATED, %d bytes, sha %s", st, len(in), sum(in))
				}
				wantChunks := (len(in) + chunk - 1) / chunk
				if st.TotalChunks != int64(wantChunks) {
					t.Fatalf("total chunks = %d, want %d", st.TotalChunks, wantChunks)
				}
				end := testkit.WaitTerminal(t, e, alice, st.ID, 20*time.Second)
				if end.State != exporter.StateComplete || end.BytesCopied != int64(len(in)) || end.Chunks != int64(wantChunks) {
					t.Fatalf("end status = %+v", end)
				}
				got := testkit.Download(t, e, alice, st.ID)
				if !bytes.Equal(got, in) {
					t.Fatalf("downloaded %d bytes (sha %s), want %d (sha %s)", len(got), sum(got), len(in), sum(in))
				}
				testkit.AssertTTLs(t, rdb)
			})
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
