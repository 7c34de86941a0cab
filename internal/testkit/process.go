package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// WorkerBinary builds cmd/worker once per test binary and returns its path.
func WorkerBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "export-worker-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", filepath.Join(buildDir, "worker"), "github.com/exportsvc/exportsvc/cmd/worker").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("building cmd/worker: %v", buildErr)
	}
	return filepath.Join(buildDir, "worker")
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// Process is a worker running as its own OS process.
type Process struct {
	cmd  *exec.Cmd
	logs SyncBuffer
	done chan struct{}
}

// StartWorkerProcess runs cmd/worker with args; it is killed when the test
// ends if still running.
func StartWorkerProcess(t testing.TB, args ...string) *Process {
	t.Helper()
	p := &Process{done: make(chan struct{})}
	p.cmd = exec.Command(WorkerBinary(t), args...)
	p.cmd.Stderr = &p.logs
	p.cmd.Stdout = &p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGCONT)
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("worker log:\n%s", p.Logs())
		}
	})
	return p
}

// Signal sends sig to the process.
func (p *Process) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// Wait waits up to d for the process to exit and returns its exit code.
func (p *Process) Wait(t testing.TB, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		t.Fatalf("worker still running %v later", d)
		return -1
	}
}

// Logs returns what the process wrote so far.
func (p *Process) Logs() string { return p.logs.String() }

// LogLines returns the log lines that contain every one of words.
func (p *Process) LogLines(words ...string) []string {
	var out []string
	for _, l := range strings.Split(p.Logs(), "\n") {
		ok := l != ""
		for _, w := range words {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}
