package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// workerProc is one cmd/worker process. Its stderr goes to
// <dir>/<name>.log and, line by line, to the tracker.
type workerProc struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	started chan struct{} // closed at its "worker started" line
	done    chan struct{} // closed once it has exited
	exitErr error         // set before done is closed
}

// startWorker runs a worker process named name and waits until it logs
// that it started (its asynq server, and so its recoverer, are running).
func (h *harness) startWorker(name string) (*workerProc, error) {
	path := filepath.Join(h.dir, name+".log")
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w := &workerProc{name: name, logPath: path, started: make(chan struct{}), done: make(chan struct{})}
	sink := &logSink{f: f, tr: h.tr, worker: name, onStart: sync.OnceFunc(func() { close(w.started) })}
	w.cmd = exec.Command(h.bin,
		"--redis", "redis://"+h.srv.Addr,
		"--queue", queue,
		"--concurrency", strconv.Itoa(h.cfg.Concurrency),
		"--max-rate", strconv.FormatInt(h.cfg.Rate, 10),
		"--shutdown-timeout", "10s",
		"--log-level", "info")
	w.cmd.Stdout, w.cmd.Stderr = sink, sink
	w.cmd.SysProcAttr = sysProcAttr()
	if err := w.cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting worker %s: %w", name, err)
	}
	h.mu.Lock()
	h.procs = append(h.procs, w)
	h.mu.Unlock()
	go func() {
		w.exitErr = w.cmd.Wait()
		f.Close()
		close(w.done)
	}()
	select {
	case <-w.started:
		return w, nil
	case <-w.done:
		return nil, fmt.Errorf("worker %s exited at start (%v); log %s:\n%s", name, w.exitErr, path, tail(path, 20))
	case <-time.After(20 * time.Second):
		w.signal(syscall.SIGKILL)
		return nil, fmt.Errorf("worker %s did not start within 20 s; log %s:\n%s", name, path, tail(path, 20))
	}
}

func (w *workerProc) pid() int { return w.cmd.Process.Pid }

func (w *workerProc) signal(sig syscall.Signal) error { return w.cmd.Process.Signal(sig) }

// wait waits up to d for the process to exit and reports whether it did.
func (w *workerProc) wait(d time.Duration) bool {
	select {
	case <-w.done:
		return true
	case <-time.After(d):
		return false
	}
}

func (w *workerProc) alive() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// exitStatus describes how the process ended.
func (w *workerProc) exitStatus() string {
	if w.exitErr == nil {
		return "exit 0"
	}
	return w.exitErr.Error()
}

// logSink copies a worker's output to its log file and feeds each complete
// line to the tracker. exec calls Write from one goroutine at a time.
type logSink struct {
	f       *os.File
	tr      *tracker
	worker  string
	onStart func()
	buf     []byte
}

func (s *logSink) Write(p []byte) (int, error) {
	s.f.Write(p)
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		s.line(s.buf[:i])
		s.buf = s.buf[i+1:]
	}
	return len(p), nil
}

func (s *logSink) line(l []byte) {
	if e, ok := parseEvent(s.worker, l); ok {
		s.tr.add(e)
		return
	}
	var m struct {
		Msg string `json:"msg"`
	}
	if json.Unmarshal(l, &m) == nil && m.Msg == "worker started" {
		s.onStart()
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}
