package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/cliutil"
	"github.com/exportsvc/exportsvc/internal/testkit"
)

func TestMain(m *testing.M) {
	cliutil.RouteRedisLogs(testkit.Logger(), slog.LevelWarn)
	os.Exit(m.Run())
}

func runWorker(ctx context.Context, args ...string) (int, string) {
	var errb testkit.SyncBuffer
	code := run(ctx, func() {}, new(slog.LevelVar), args, &errb)
	return code, errb.String()
}

func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "worker: flag provided but not defined: -bogus"},
		{[]string{"extra"}, `worker: unexpected argument "extra"`},
		{[]string{"--concurrency", "0"}, "--concurrency must be positive"},
		{[]string{"--max-rate", "fast"}, `"fast" is not a byte count`},
		{[]string{"--shutdown-timeout", "soon"}, `invalid value "soon" for flag -shutdown-timeout`},
		{[]string{"--shutdown-timeout", "-1s"}, "must not be negative"},
		{[]string{"--log-level", "loud"}, `"loud" is not a log level`},
		{[]string{"--redis", "http://:hunter2@h/0"}, "invalid URL scheme: http"},
		{[]string{"--redis", "redis://:hunter2@h:port/0"}, "invalid Redis URL (not shown, it may hold a password)"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			t.Parallel()
			code, stderr := runWorker(context.Background(), c.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if !strings.Contains(stderr, c.want) {
				t.Errorf("stderr lacks %q:\n%s", c.want, stderr)
			}
			if strings.Contains(stderr, "hunter2") {
				t.Errorf("stderr shows the password:\n%s", stderr)
			}
		})
	}
}

func TestEnvFallback(t *testing.T) {
	t.Setenv("WORKER_CONCURRENCY", "0")
	code, stderr := runWorker(context.Background())
	if code != 2 || !strings.Contains(stderr, "--concurrency must be positive, not 0") {
		t.Fatalf("WORKER_CONCURRENCY=0: exit %d, stderr %q", code, stderr)
	}
	// The flag wins over the environment.
	t.Setenv("REDIS_URL", "redis://:hunter2@"+closedAddr(t)+"/0")
	code, stderr = runWorker(context.Background(), "--concurrency", "2", "--redis", "redis://h:port")
	if code != 2 || !strings.Contains(stderr, "invalid Redis URL") {
		t.Fatalf("--redis over REDIS_URL: exit %d, stderr %q", code, stderr)
	}
	t.Setenv("EXPORT_MAX_RATE", "lots")
	code, stderr = runWorker(context.Background(), "--concurrency", "2")
	if code != 2 || !strings.Contains(stderr, "invalid value for $EXPORT_MAX_RATE") {
		t.Fatalf("EXPORT_MAX_RATE=lots: exit %d, stderr %q", code, stderr)
	}
}

func TestUnreachableRedis(t *testing.T) {
	addr := closedAddr(t)
	code, stderr := runWorker(context.Background(), "--redis", "redis://:hunter2@"+addr+"/0")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if !strings.Contains(stderr, "cannot reach Redis at redis://:xxxxx@"+addr+"/0") || strings.Contains(stderr, "hunter2") {
		t.Errorf("stderr %q: want the redacted URL and never the password", stderr)
	}
	checkJSONLines(t, stderr)
}

func checkJSONLines(t *testing.T, log string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

// TestRunsExportsAndStops runs the worker in process against a
// password-protected miniredis: it completes an export, and returns 0
// once its context ends (what SIGTERM does in main).
func TestRunsExportsAndStops(t *testing.T) {
	m := miniredis.RunT(t)
	m.RequireAuth("hunter2")
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), Password: "hunter2"})
	t.Cleanup(func() { rdb.Close() })

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var unsignalled atomic.Bool
	var errb testkit.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, func() { unsignalled.Store(true) }, new(slog.LevelVar),
			[]string{"--redis", "redis://:hunter2@" + m.Addr() + "/0", "--queue", "q1", "--log-level", "debug", "--metrics-addr", "127.0.0.1:0"}, &errb)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(errb.String(), `"msg":"worker started"`) {
		if time.Now().After(deadline) {
			t.Fatalf("worker did not start:\n%s", errb.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	e, err := exporter.New(rdb, exporter.WithQueue("q1"), exporter.WithLogger(testkit.Logger()))
	if err != nil {
		t.Fatal(err)
	}
	u := exporter.User{ID: "erin", Permissions: []string{exporter.PermissionExport}}
	st, err := e.StartExport(context.Background(), u, strings.NewReader(strings.Repeat("abc\n", 50000)))
	if err != nil {
		t.Fatal(err)
	}
	for !st.State.Terminal() {
		if time.Now().After(deadline.Add(10 * time.Second)) {
			t.Fatalf("export not done: %+v\n%s", st, errb.String())
		}
		time.Sleep(10 * time.Millisecond)
		if st, err = e.GetExportStatus(context.Background(), u, st.ID); err != nil {
			t.Fatal(err)
		}
	}
	if st.State != exporter.StateComplete || st.BytesCopied != 200000 {
		t.Fatalf("export ended %+v", st)
	}
	metricsURL := regexp.MustCompile(`"url":"(http://[^"]+/metrics)"`).FindStringSubmatch(errb.String())
	if metricsURL == nil {
		t.Fatalf("no metrics URL in the log:\n%s", errb.String())
	}
	resp, err := http.Get(metricsURL[1])
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`export_events_total{event="complete"} 1` + "\n", "export_completed_bytes_total 200000\n"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d after shutdown, want 0:\n%s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("worker did not stop within 10s:\n%s", errb.String())
	}
	if !unsignalled.Load() {
		t.Error("run did not restore the default signal handling before shutting down")
	}
	log := errb.String()
	if strings.Contains(log, "hunter2") {
		t.Errorf("the log shows the password:\n%s", log)
	}
	msgs := map[string]map[string]any{}
	for _, l := range checkJSONLines(t, log) {
		if s, ok := l["msg"].(string); ok {
			msgs[s] = l
		}
	}
	started := msgs["worker started"]
	if started == nil || started["redis"] != "redis://:xxxxx@"+m.Addr()+"/0" || started["queue"] != "q1" {
		t.Errorf("worker started line %v, want the redacted URL and queue q1", started)
	}
	if msgs["export complete"] == nil || msgs["worker stopped"] == nil {
		t.Errorf("log lacks export complete or worker stopped:\n%s", log)
	}
}
