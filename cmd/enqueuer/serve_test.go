package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/internal/worker"
)

func TestServeAnswersOverHTTPAndStopsWithItsContext(t *testing.T) {
	srv := testkit.StartRedis(t)
	testkit.StartWorker(t, srv.Client(t), worker.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderrR, stderrW := io.Pipe()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--redis", "redis://" + srv.Addr}, strings.NewReader(""), io.Discard, stderrW)
		stderrW.Close()
	}()
	line, err := bufio.NewReader(stderrR).ReadString('\n')
	if err != nil {
		t.Fatalf("no start-up line: %v", err)
	}
	go io.Copy(io.Discard, stderrR)
	base := strings.TrimSpace(line[strings.Index(line, "http://"):])

	req, _ := http.NewRequest("POST", base+"/exports", strings.NewReader("served"))
	req.Header.Set("X-User", "alice")
	req.Header.Set("X-Permissions", "exporter")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var st exporter.Status
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || st.TotalBytes != 6 {
		t.Fatalf("POST /exports: %d %+v", resp.StatusCode, st)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.State != exporter.StateComplete && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		req, _ := http.NewRequest("GET", base+"/exports/"+st.ID, nil)
		req.Header.Set("X-User", "alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&st)
		resp.Body.Close()
	}
	if st.State != exporter.StateComplete {
		t.Fatalf("export over HTTP: %+v", st)
	}
	cancel() // what SIGTERM does
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("serve exited %d", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("serve did not stop with its context")
	}
}
