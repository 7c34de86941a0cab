package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/storage"
)

var uuidLine = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n$`)

const redisPassword = "s3cret-e2e-password"

// buildBinaries builds the enqueuer and worker commands into dir.
func buildBinaries(t *testing.T, dir string) (enqueuer, worker string) {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	cmd := exec.Command(gobin, "build", "-o", dir+string(filepath.Separator),
		"github.com/exportsvc/exportsvc/cmd/enqueuer", "github.com/exportsvc/exportsvc/cmd/worker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "enqueuer"), filepath.Join(dir, "worker")
}

// cleanEnv is the test process's environment without any variable the
// commands read, so that only what a test sets counts.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "REDIS_URL" || k == "LOG_LEVEL" || strings.HasPrefix(k, "EXPORT_") || strings.HasPrefix(k, "WORKER_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

type result struct {
	stdout, stderr string
	code           int
}

// runBin runs a command to its end (within a minute) and returns its
// output and exit code.
func runBin(t *testing.T, env []string, stdin []byte, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
	default:
		t.Fatalf("running %s %v: %v", filepath.Base(bin), args, err)
	}
	return result{stdout: out.String(), stderr: errb.String(), code: cmd.ProcessState.ExitCode()}
}

// wantFailure checks a failed command: exit code, nothing on stdout and
// exactly one "enqueuer: " line on stderr that contains want.
func wantFailure(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("stdout %q, want nothing", r.stdout)
	}
	lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	if code == 1 && len(lines) != 1 {
		t.Errorf("stderr has %d lines, want one: %q", len(lines), r.stderr)
	}
	if !strings.HasPrefix(last, "enqueuer: ") || !strings.Contains(last, want) {
		t.Errorf("stderr ends with %q, want an \"enqueuer: \" line containing %q", last, want)
	}
}

// proc is a worker process.
type proc struct {
	cmd    *exec.Cmd
	stderr *testkit.SyncBuffer
	done   chan struct{}
	err    error
}

// startWorker runs the worker binary and waits until it logs that it
// started. The test kills it at the end if it still runs.
func startWorker(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), stderr: &testkit.SyncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting worker: %v", err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.After(15 * time.Second)
	for !strings.Contains(p.stderr.String(), `"msg":"worker started"`) {
		select {
		case <-p.done:
			t.Fatalf("worker exited at start (%v):\n%s", p.err, p.stderr)
		case <-deadline:
			t.Fatalf("worker did not log its start within 15s:\n%s", p.stderr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return p
}

// stop sends SIGTERM and checks the worker exits 0 within limit.
func (p *proc) stop(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("worker still running %v after SIGTERM:\n%s", limit, p.stderr)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("worker exited %d after SIGTERM, want 0:\n%s", code, p.stderr)
	}
	return time.Since(start)
}

// checkLog checks that every stderr line of a worker is a JSON object and
// that the Redis password appears nowhere.
func (p *proc) checkLog(t *testing.T) {
	t.Helper()
	log := p.stderr.String()
	if strings.Contains(log, redisPassword) {
		t.Errorf("the worker logged the Redis password:\n%s", log)
	}
	if !strings.Contains(log, `"redis":"redis://:xxxxx@`) {
		t.Errorf("the worker did not log the redacted Redis URL:\n%s", log)
	}
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("worker log line is not JSON: %q", line)
		}
	}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// waitState polls the export until cond holds.
func waitState(t *testing.T, e *exporter.Exporter, id string, what string, within time.Duration, cond func(exporter.Status) bool) exporter.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, err := e.GetExportStatus(context.Background(), e2eAlice, id)
		if err != nil {
			t.Fatalf("status of %s: %v", id, err)
		}
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("export %s: %s not reached within %v; status %+v", id, what, within, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var e2eAlice = exporter.User{ID: "alice", Permissions: []string{exporter.PermissionExport}}

// TestBinariesEndToEnd builds both commands and runs them as separate
// processes against a real, password-protected redis-server.
func TestBinariesEndToEnd(t *testing.T) {
	dir := t.TempDir()
	enq, wrk := buildBinaries(t, dir)

	srv := testkit.StartRedis(t)
	if err := srv.Client(t).ConfigSet(context.Background(), "requirepass", redisPassword).Err(); err != nil {
		t.Fatal(err)
	}
	redisURL := fmt.Sprintf("redis://:%s@%s/0", redisPassword, srv.Addr)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, Password: redisPassword})
	t.Cleanup(func() { rdb.Close() })
	e, err := exporter.New(rdb, exporter.WithLogger(testkit.Logger()))
	if err != nil {
		t.Fatal(err)
	}

	env := cleanEnv("REDIS_URL="+redisURL, "EXPORT_USER=alice")
	// 1 MiB/s: long enough to cancel or interrupt an export of a few MiB.
	w1 := startWorker(t, wrk, cleanEnv(), "--redis", redisURL, "--max-rate", "1048576", "--concurrency", "4")

	in := randomBytes(300<<10, 1)
	inFile := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(inFile, in, 0o644); err != nil {
		t.Fatal(err)
	}
	outDir := t.TempDir()
	var id string

	t.Run("start --wait", func(t *testing.T) {
		r := runBin(t, env, nil, enq, "start", "--wait", inFile)
		if r.code != 0 {
			t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
		}
		if !uuidLine.MatchString(r.stdout) {
			t.Fatalf("stdout %q, want one export id line", r.stdout)
		}
		id = strings.TrimSpace(r.stdout)
		lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
		if last := lines[len(lines)-1]; !strings.Contains(last, id) || !strings.Contains(last, "COMPLETE") ||
			!strings.Contains(last, fmt.Sprintf("%d/%d bytes", len(in), len(in))) {
			t.Fatalf("last progress line %q, want %s COMPLETE with every byte", last, id)
		}
	})
	if id == "" {
		t.FailNow()
	}

	t.Run("download -o", func(t *testing.T) {
		out := filepath.Join(outDir, "out.bin")
		r := runBin(t, env, nil, enq, "download", "-o", out, id)
		if r.code != 0 || r.stdout != "" || r.stderr != "" {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, in) {
			t.Fatalf("downloaded %d bytes (sha %s), want %d (sha %s)", len(got), sha(got), len(in), sha(in))
		}
	})

	t.Run("download to stdout", func(t *testing.T) {
		r := runBin(t, env, nil, enq, "download", id)
		if r.code != 0 || r.stdout != string(in) {
			t.Fatalf("exit %d, %d bytes on stdout (want %d), stderr %q", r.code, len(r.stdout), len(in), r.stderr)
		}
	})

	t.Run("status", func(t *testing.T) {
		r := runBin(t, env, nil, enq, "status", id)
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		var st exporter.Status
		if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
			t.Fatalf("status output is not JSON: %v\n%s", err, r.stdout)
		}
		if st.ID != id || st.State != exporter.StateComplete || st.Owner != "alice" ||
			st.BytesCopied != int64(len(in)) || st.TotalBytes != int64(len(in)) || st.SHA256 != sha(in) {
			t.Fatalf("status %+v, want COMPLETE, owner alice, %d bytes, sha %s", st, len(in), sha(in))
		}
		if !strings.Contains(r.stdout, "\n  \"state\": \"COMPLETE\",\n") {
			t.Fatalf("status is not indented JSON:\n%s", r.stdout)
		}
	})

	t.Run("errors", func(t *testing.T) {
		wantFailure(t, runBin(t, env, nil, enq, "status", "NOT-AN-ID"), 1, `invalid export id`)
		wantFailure(t, runBin(t, env, nil, enq, "status", strings.ToUpper(id)), 1, `invalid export id`)
		wantFailure(t, runBin(t, env, nil, enq, "status", "--user", "bob", id), 1, `permission denied: user "bob"`)
		other := "0b6f5cbe-4e0f-4a4f-9f8e-3c1d2a5b7e90"
		wantFailure(t, runBin(t, env, nil, enq, "status", other), 1, "no export found for id: "+other)
		wantFailure(t, runBin(t, env, nil, enq, "cancel", id), 1, "can no longer be cancelled: export "+id+" is COMPLETE")
		wantFailure(t, runBin(t, env, nil, enq, "status"), 2, "status: missing argument")
		wantFailure(t, runBin(t, env, nil, enq, "download", id, "-o", "x"), 2, `unexpected argument "-o"`)
		wantFailure(t, runBin(t, env, nil, enq, "frobnicate"), 2, `unknown command "frobnicate"`)
		if r := runBin(t, env, nil, enq); r.code != 2 || !strings.Contains(r.stderr, "usage: enqueuer") {
			t.Errorf("no command: exit %d, stderr %q; want 2 and the usage", r.code, r.stderr)
		}

		// A download that is refused leaves no file, not even a temporary one.
		out := filepath.Join(outDir, "bob.bin")
		wantFailure(t, runBin(t, env, nil, enq, "download", "--user", "bob", "-o", out, id), 1, "permission denied")
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("refused download left %s (stat: %v)", out, err)
		}
		// A wrong password is reported without the password.
		bad := cleanEnv("REDIS_URL=redis://:wrong-"+redisPassword+"@"+srv.Addr+"/0", "EXPORT_USER=alice")
		r := runBin(t, bad, nil, enq, "status", id)
		wantFailure(t, r, 1, "cannot reach Redis at redis://:xxxxx@"+srv.Addr)
		if strings.Contains(r.stderr, redisPassword) {
			t.Errorf("stderr shows the password: %q", r.stderr)
		}
	})

	t.Run("start - from stdin", func(t *testing.T) {
		r := runBin(t, env, []byte("hello, export\n"), enq, "start", "--wait", "-")
		if r.code != 0 || !uuidLine.MatchString(r.stdout) {
			t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		d := runBin(t, env, nil, enq, "download", strings.TrimSpace(r.stdout))
		if d.code != 0 || d.stdout != "hello, export\n" {
			t.Fatalf("download: exit %d, stdout %q, stderr %q", d.code, d.stdout, d.stderr)
		}
	})

	t.Run("start needs the exporter permission", func(t *testing.T) {
		wantFailure(t, runBin(t, env, []byte("x"), enq, "start", "--permissions", "reader", "-"), 1,
			`permission denied: user "alice" lacks permission "exporter"`)
	})

	t.Run("cancel a running export", func(t *testing.T) {
		big := randomBytes(4<<20, 2) // 4 s at 1 MiB/s
		f := filepath.Join(dir, "big.bin")
		if err := os.WriteFile(f, big, 0o644); err != nil {
			t.Fatal(err)
		}
		r := runBin(t, env, nil, enq, "start", f)
		if r.code != 0 || !uuidLine.MatchString(r.stdout) {
			t.Fatalf("start: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
		}
		cid := strings.TrimSpace(r.stdout)
		waitState(t, e, cid, "running with bytes copied", 15*time.Second, func(st exporter.Status) bool {
			return st.State == exporter.StatePending && st.BytesCopied > 0
		})
		c := runBin(t, env, nil, enq, "cancel", cid)
		if c.code != 0 {
			t.Fatalf("cancel: exit %d, stderr %q", c.code, c.stderr)
		}
		var st exporter.Status
		if err := json.Unmarshal([]byte(c.stdout), &st); err != nil || st.State != exporter.StateCancelled || st.ID != cid {
			t.Fatalf("cancel printed %q (%v), want the CANCELLED status", c.stdout, err)
		}
		out := filepath.Join(outDir, "cancelled.bin")
		wantFailure(t, runBin(t, env, nil, enq, "download", "-o", out, cid), 1, "export is not complete")
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("refused download left %s", out)
		}
		k := storage.KeysFor(cid)
		for range 2 {
			if n, err := rdb.Exists(context.Background(), k.Data, k.Source).Result(); err != nil || n != 0 {
				t.Fatalf("after cancel, %d data/source keys exist (err %v)", n, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		// Cancelling again succeeds and prints the same state.
		if c := runBin(t, env, nil, enq, "cancel", cid); c.code != 0 || !strings.Contains(c.stdout, `"state": "CANCELLED"`) {
			t.Fatalf("second cancel: exit %d, stdout %q, stderr %q", c.code, c.stdout, c.stderr)
		}
	})

	t.Run("SIGTERM hands a running export to the next worker", func(t *testing.T) {
		mid := randomBytes(3<<20, 3) // 3 s at 1 MiB/s
		f := filepath.Join(dir, "mid.bin")
		if err := os.WriteFile(f, mid, 0o644); err != nil {
			t.Fatal(err)
		}
		r := runBin(t, env, nil, enq, "start", f)
		if r.code != 0 {
			t.Fatalf("start: exit %d, stderr %q", r.code, r.stderr)
		}
		midID := strings.TrimSpace(r.stdout)
		waitState(t, e, midID, "running with bytes copied", 15*time.Second, func(st exporter.Status) bool {
			return st.State == exporter.StatePending && st.BytesCopied > 0
		})
		if d := w1.stop(t, 5*time.Second); d > 3*time.Second {
			t.Errorf("worker took %v to stop with a running export; want it handed back at the next batch", d)
		}
		w1.checkLog(t)
		st, err := e.GetExportStatus(context.Background(), e2eAlice, midID)
		if err != nil || st.State != exporter.StatePending || st.BytesCopied >= int64(len(mid)) {
			t.Fatalf("after the worker stopped: %+v (%v), want PENDING part way", st, err)
		}
		w2 := startWorker(t, wrk, cleanEnv("REDIS_URL="+redisURL, "EXPORT_MAX_RATE=4MiB"))
		end := waitState(t, e, midID, "ended", 30*time.Second, func(st exporter.Status) bool { return st.State.Terminal() })
		if end.State != exporter.StateComplete {
			t.Fatalf("handed-back export ended %+v", end)
		}
		out := filepath.Join(outDir, "mid.bin")
		if d := runBin(t, env, nil, enq, "download", "-o", out, midID); d.code != 0 {
			t.Fatalf("download: exit %d, stderr %q", d.code, d.stderr)
		}
		if got, _ := os.ReadFile(out); !bytes.Equal(got, mid) {
			t.Fatalf("resumed export differs: %d bytes (sha %s), want %d (sha %s)", len(got), sha(got), len(mid), sha(mid))
		}
		if !strings.Contains(w2.stderr.String(), `"max_rate":4194304`) {
			t.Errorf("EXPORT_MAX_RATE=4MiB not applied; worker log:\n%s", w2.stderr)
		}
		w2.stop(t, 5*time.Second)
		w2.checkLog(t)
	})

	// No download left a temporary file behind.
	entries, _ := os.ReadDir(outDir)
	for _, en := range entries {
		if strings.Contains(en.Name(), ".part-") {
			t.Errorf("temporary file left behind: %s", en.Name())
		}
	}
	testkit.AssertTTLs(t, rdb)
}
