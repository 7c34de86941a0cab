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
	buildMu   sync.Mutex
	buildDir  string
	built     = map[string]string{} // package path -> binary
	buildErrs = map[string]error{}
)

// Binary builds the command in package pkg (a path below the module, such
// as "cmd/worker") once per test binary and returns the binary's path.
func Binary(t testing.TB, pkg string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if path, ok := built[pkg]; ok {
		return path
	}
	if err, ok := buildErrs[pkg]; ok {
		t.Fatalf("building %s: %v", pkg, err)
	}
	var err error
	if buildDir == "" {
		if buildDir, err = os.MkdirTemp("", "export-test-bin-"); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(buildDir, filepath.Base(pkg))
	out, err := exec.Command("go", "build", "-o", path, "github.com/exportsvc/exportsvc/"+pkg).CombinedOutput()
	if err != nil {
		buildErrs[pkg] = &buildError{err: err, out: string(out)}
		t.Fatalf("building %s: %v", pkg, buildErrs[pkg])
	}
	built[pkg] = path
	return path
}

// RemoveBinaries deletes what Binary built; call it from TestMain after
// m.Run.
func RemoveBinaries() {
	buildMu.Lock()
	defer buildMu.Unlock()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// WorkerBinary builds cmd/worker once per test binary and returns its path.
func WorkerBinary(t testing.TB) string { return Binary(t, "cmd/worker") }

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
