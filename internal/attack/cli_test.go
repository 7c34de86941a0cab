package attack_test

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/exportsvc/exportsvc/internal/testkit"
)

const secret = "hunter2-attack"

// run runs a binary with a clean environment and returns its stderr and
// exit code; it is killed after 10 s.
func runBinary(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "EXPORT_USER=alice"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s %q still running after 10 s", bin, args)
	}
	return stderr.String(), cmd.ProcessState.ExitCode()
}

// BUG (secret in logs): a Redis URL with a password that ends up as a
// positional argument is echoed verbatim in the usage error, although
// the commands take care to redact it everywhere else (cliutil.RedactURL).
// It happens with the most common slips: a flag after the id
// ("enqueuer status ID --redis=redis://:pw@h/0"; Go's flag package stops
// at the first argument, cmd/enqueuer/main.go parse prints
// fs.Arg(nargs) with %q) or a forgotten --redis ("worker redis://:pw@h/0";
// cmd/worker/main.go prints fs.Arg(0)). stderr goes to the container log.
// Now: an unexpected argument that parses as a URL is shown redacted
// (or not shown).
func TestAMisplacedRedisURLIsNotEchoedWithItsPassword(t *testing.T) {
	url := "redis://:" + secret + "@127.0.0.1:1/0"
	enq := enqueuerBinary(t)
	for _, args := range [][]string{
		{"status", "0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c", "--redis=" + url},
		{"cancel", "0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c", "--redis=" + url},
		{"start", "file.bin", "--redis=" + url},
	} {
		out, code := runBinary(t, enq, args...)
		if code != 2 {
			t.Errorf("enqueuer %s: exit %d, want 2 (usage)", args[0], code)
		}
		if strings.Contains(out, secret) {
			t.Errorf("enqueuer %s ... --redis=URL printed the password:\n%s", args[0], lastLine(out))
		}
	}
	out, _ := runBinary(t, testkit.WorkerBinary(t), url)
	if strings.Contains(out, secret) {
		t.Errorf("worker URL (without --redis) printed the password:\n%s", lastLine(out))
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Regression test (this was a bug, fixed): "enqueuer start -" reading a pipe that stays open cannot be
// interrupted: SIGINT cancels the command's context (signal.NotifyContext
// in cmd/enqueuer/main.go, which also keeps a second Ctrl-C from killing
// the process), but StartExport waits for the blocked stdin Read whatever
// its context says (see TestStartExportReturnsWhenItsContextEndsWhileTheReaderBlocks).
// Now: the command exits promptly on SIGINT ("interrupted", exit 1)
// with no key left behind.
func TestStartFromAnOpenPipeStopsOnSIGINT(t *testing.T) {
	srv := testkit.StartRedis(t)
	rdb := srv.Client(t)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	cmd := exec.Command(enqueuerBinary(t), "start", "--redis", "redis://"+srv.Addr+"/0", "-")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "EXPORT_USER=alice"}
	cmd.Stdin = pr
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pr.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	if _, err := pw.Write(make([]byte, 100<<10)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // connected and reading stdin
	cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-done:
		if code := cmd.ProcessState.ExitCode(); code != 1 {
			t.Errorf("exit %d after SIGINT, want 1; stderr %q", code, stderr.String())
		}
		testkit.AssertNoKeys(t, rdb)
	case <-time.After(3 * time.Second):
		cmd.Process.Signal(syscall.SIGINT) // a second Ctrl-C does not help either
		time.Sleep(500 * time.Millisecond)
		select {
		case <-done:
			t.Fatal("enqueuer start - ignored the first SIGINT for 3 s while stdin stayed open")
		default:
			t.Fatal("enqueuer start - ignored two SIGINTs for 3.5 s while stdin stayed open")
		}
	}
}
