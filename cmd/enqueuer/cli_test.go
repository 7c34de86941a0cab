package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/cliutil"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/internal/worker"
	"github.com/exportsvc/exportsvc/storage"
)

func TestMain(m *testing.M) {
	// As main does: go-redis's own log lines go through slog (silent
	// unless TESTLOG is set).
	cliutil.RouteRedisLogs(testkit.Logger(), slog.LevelWarn)
	os.Exit(m.Run())
}

// runIn runs the enqueuer in this process, within a minute.
func runIn(t *testing.T, stdin []byte, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := run(ctx, args, bytes.NewReader(stdin), &out, &errb)
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func TestDemo(t *testing.T) {
	t.Run("file, fast rate", func(t *testing.T) {
		t.Parallel()
		in := randomBytes(200<<10, 7)
		f := filepath.Join(t.TempDir(), "in.bin")
		if err := os.WriteFile(f, in, 0o644); err != nil {
			t.Fatal(err)
		}
		r := runIn(t, nil, "demo", "--file", f, "--max-rate", "2MiB", "--chunk-size", "8192")
		if r.code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		for _, want := range []string{
			"source   sha256 " + sha(in) + "\n",
			"download sha256 " + sha(in) + "\n",
			fmt.Sprintf("COMPLETE    %d/%d bytes", len(in), len(in)),
			"chunks 25/25",
			"demo: OK, checksums match\n",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, r.stdout)
			}
		}
	})
	t.Run("generated sample, no limit", func(t *testing.T) {
		t.Parallel()
		sum := sha(Sample(demoSampleSize))
		r := runIn(t, nil, "demo", "--max-rate", "0")
		if r.code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "source   sha256 "+sum) || !strings.Contains(r.stdout, "download sha256 "+sum) {
			t.Fatalf("output lacks the sample's sum %s twice:\n%s", sum, r.stdout)
		}
	})
	t.Run("cancel after 300ms", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		r := runIn(t, nil, "demo", "--cancel-after", "300ms", "--max-rate", "20KiB")
		if r.code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		if !strings.Contains(r.stdout, "demo: cancelled after 300ms\n") ||
			!strings.Contains(r.stdout, "demo: OK, export CANCELLED") ||
			strings.Contains(r.stdout, "COMPLETE") {
			t.Fatalf("output does not show a CANCELLED export:\n%s", r.stdout)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("demo took %v; the sample at 20 KiB/s would take 19 s, so the cancel did not end it", d)
		}
	})
	t.Run("cancel too late fails", func(t *testing.T) {
		t.Parallel()
		r := runIn(t, nil, "demo", "--cancel-after", "5s", "--max-rate", "0")
		r.stdout = "" // the demo's progress
		wantFailure(t, r, 1, "export ended COMPLETE before the cancel after 5s")
	})
	t.Run("missing file", func(t *testing.T) {
		t.Parallel()
		r := runIn(t, nil, "demo", "--file", filepath.Join(t.TempDir(), "nope"))
		wantFailure(t, r, 1, "no such file")
	})
}

func TestSampleIsDeterministicText(t *testing.T) {
	a, b := Sample(demoSampleSize), Sample(demoSampleSize)
	if !bytes.Equal(a, b) || len(a) != demoSampleSize {
		t.Fatalf("Sample: %d bytes, deterministic %v", len(a), bytes.Equal(a, b))
	}
	lines := strings.Split(strings.TrimSuffix(string(a), "\n"), "\n")
	if len(lines) != demoSampleSize/64 || lines[0] != "line 000001: the quick brown fox jumps over the lazy dog again." ||
		lines[len(lines)-1] != "line 006144: the quick brown fox jumps over the lazy dog again." {
		t.Fatalf("%d lines, first %q", len(lines), lines[0])
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUsageErrors(t *testing.T) {
	const id = "0b6f5cbe-4e0f-4a4f-9f8e-3c1d2a5b7e90"
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"frob"}, 2, `unknown command "frob"`},
		{[]string{"status"}, 2, "status: missing argument"},
		{[]string{"cancel"}, 2, "cancel: missing argument"},
		{[]string{"download"}, 2, "download: missing argument"},
		{[]string{"start"}, 2, "start: missing argument"},
		{[]string{"status", id, id}, 2, "unexpected argument"},
		{[]string{"download", id, "-o", "x"}, 2, `unexpected argument "-o" (flags go before arguments)`},
		{[]string{"start", "--bogus", "f"}, 2, "start: flag provided but not defined: -bogus"},
		{[]string{"demo", "--chunk-size", "0"}, 2, "--chunk-size must be between"},
		{[]string{"demo", "--max-rate", "fast"}, 2, `"fast" is not a byte count`},
		{[]string{"demo", "--cancel-after", "-1s"}, 2, "must not be negative"},
		{[]string{"status", "--redis", "http://h/0", id}, 2, "invalid URL scheme"},
		{[]string{"status", "--redis", "redis://:hunter2@h:port/0", id}, 2, "invalid Redis URL (not shown"},
		{[]string{"start", "/nonexistent/file"}, 1, "open /nonexistent/file: no such file or directory"},
		{[]string{"start", "/"}, 1, "/ is a directory"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Parallel()
			r := runIn(t, nil, c.args...)
			wantFailure(t, r, c.code, c.want)
			if strings.Contains(r.stderr, "hunter2") {
				t.Errorf("stderr shows the password: %q", r.stderr)
			}
			parseErr := strings.Contains(c.want, "argument") || strings.Contains(c.want, "flag") || strings.Contains(c.want, "command")
			if parseErr && !strings.Contains(r.stderr, "usage: enqueuer") {
				t.Errorf("a usage error without the usage: %q", r.stderr)
			}
		})
	}
	t.Run("help", func(t *testing.T) {
		t.Parallel()
		r := runIn(t, nil, "status", "-h")
		if r.code != 0 || !strings.Contains(r.stdout, "usage: enqueuer status [flags] ID") {
			t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
		}
	})
	t.Run("unreachable redis", func(t *testing.T) {
		t.Parallel()
		addr := closedPort(t)
		r := runIn(t, nil, "status", "--redis", "redis://:hunter2@"+addr+"/0", id)
		wantFailure(t, r, 1, "cannot reach Redis at redis://:xxxxx@"+addr+"/0")
		if strings.Contains(r.stderr, "hunter2") {
			t.Errorf("stderr shows the password: %q", r.stderr)
		}
	})
}

// TestStartWaitFailsUnlessComplete: start --wait exits 1 when the export
// ends CANCELLED, with the id alone on stdout.
func TestStartWaitFailsUnlessComplete(t *testing.T) {
	_, rdb := testkit.Mini(t)
	testkit.StartWorker(t, rdb, worker.Config{MaxRate: 20 << 10})
	url := "redis://" + rdb.Options().Addr + "/0"
	stdout := &testkit.SyncBuffer{}
	var errb bytes.Buffer
	done := make(chan int)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		done <- run(ctx, []string{"start", "--wait", "--redis", url, "--user", "carol", "-"},
			bytes.NewReader(randomBytes(400<<10, 9)), stdout, &errb)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasSuffix(stdout.String(), "\n") {
		if time.Now().After(deadline) {
			t.Fatal("start printed no id within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	id := strings.TrimSpace(stdout.String())
	c := runIn(t, nil, "cancel", "--redis", url, "--user", "carol", id)
	if c.code != 0 || !strings.Contains(c.stdout, `"state": "CANCELLED"`) {
		t.Fatalf("cancel: exit %d, stdout %q, stderr %q", c.code, c.stdout, c.stderr)
	}
	select {
	case code := <-done:
		r := result{stdout: stdout.String(), stderr: errb.String(), code: code}
		if r.code != 1 || !uuidLine.MatchString(r.stdout) {
			t.Fatalf("start --wait: exit %d, stdout %q; want 1 and the id", r.code, r.stdout)
		}
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if last := lines[len(lines)-1]; last != "enqueuer: export "+id+" ended CANCELLED" {
			t.Fatalf("last stderr line %q", last)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("start --wait did not end within 10s of the cancel")
	}
}

// TestDownloadFailureLeavesNoFile: a download whose bytes fail the
// checksum leaves the -o file as it was, and no temporary file.
func TestDownloadFailureLeavesNoFile(t *testing.T) {
	_, rdb := testkit.Mini(t)
	testkit.StartWorker(t, rdb, worker.Config{})
	e, err := exporter.New(rdb, exporter.WithLogger(testkit.Logger()), exporter.WithChunkSize(1024))
	if err != nil {
		t.Fatal(err)
	}
	u := exporter.User{ID: "dave", Permissions: []string{exporter.PermissionExport}}
	st, err := e.StartExport(context.Background(), u, bytes.NewReader(randomBytes(10<<10, 4)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for st.State != exporter.StateComplete {
		if time.Now().After(deadline) {
			t.Fatalf("export not COMPLETE: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
		if st, err = e.GetExportStatus(context.Background(), u, st.ID); err != nil {
			t.Fatal(err)
		}
	}
	// Damage one chunk of the result.
	if err := rdb.LSet(context.Background(), storage.KeysFor(st.ID).Data, 3, strings.Repeat("x", 1024)).Err(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "out.bin")
	if err := os.WriteFile(out, []byte("previous"), 0o644); err != nil {
		t.Fatal(err)
	}
	url := "redis://" + rdb.Options().Addr + "/0"
	r := runIn(t, nil, "download", "--redis", url, "--user", "dave", "-o", out, st.ID)
	wantFailure(t, r, 1, "download failed, "+out+" not written")
	if b, _ := os.ReadFile(out); string(b) != "previous" {
		t.Errorf("failed download changed %s to %d bytes", out, len(b))
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("failed download left files: %v", entries)
	}
}
