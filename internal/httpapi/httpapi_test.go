package httpapi_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/httpapi"
	"github.com/exportsvc/exportsvc/internal/testkit"
	"github.com/exportsvc/exportsvc/internal/worker"
)

type client struct {
	t    *testing.T
	base string
}

func (c client) do(method, path, user, perms string, body io.Reader) (*http.Response, []byte) {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if user != "" {
		req.Header.Set(httpapi.HeaderUser, user)
	}
	if perms != "" {
		req.Header.Set(httpapi.HeaderPermissions, perms)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp, b
}

func status(t *testing.T, b []byte) exporter.Status {
	t.Helper()
	var st exporter.Status
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("status JSON %q: %v", b, err)
	}
	return st
}

func serve(t *testing.T, rdb redis.UniversalClient, opts ...exporter.Option) client {
	e, err := exporter.New(rdb, append([]exporter.Option{exporter.WithLogger(testkit.Logger())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpapi.New(e, testkit.Logger()))
	t.Cleanup(srv.Close)
	return client{t: t, base: srv.URL}
}

func TestAnExportRoundTripsOverHTTP(t *testing.T) {
	_, rdb := testkit.Mini(t)
	testkit.StartWorker(t, rdb, worker.Config{})
	c := serve(t, rdb, exporter.WithChunkSize(1000))
	src := bytes.Repeat([]byte("over the wire\n"), 5000)

	resp, b := c.do("POST", "/exports", "alice", "exporter", bytes.NewReader(src))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST: %d %s", resp.StatusCode, b)
	}
	st := status(t, b)
	if resp.Header.Get("Location") != "/exports/"+st.ID || st.TotalBytes != int64(len(src)) || st.State != exporter.StateCreated {
		t.Fatalf("POST: Location %q, status %+v", resp.Header.Get("Location"), st)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.State != exporter.StateComplete {
		if time.Now().After(deadline) {
			t.Fatalf("still %s", st.State)
		}
		time.Sleep(10 * time.Millisecond)
		resp, b = c.do("GET", "/exports/"+st.ID, "alice", "", nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET status: %d %s", resp.StatusCode, b)
		}
		st = status(t, b)
	}
	resp, b = c.do("GET", "/exports/"+st.ID+"/data", "alice", "", nil)
	sum := sha256.Sum256(src)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, src) || resp.Header.Get("X-Export-SHA256") != hex.EncodeToString(sum[:]) {
		t.Fatalf("GET data: %d, %d bytes, sha header %q", resp.StatusCode, len(b), resp.Header.Get("X-Export-SHA256"))
	}
	if resp, b = c.do("GET", "/exports/"+st.ID, "root", "exporter:admin", nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("admin GET: %d %s", resp.StatusCode, b)
	}
	testkit.AssertTTLs(t, rdb)
}

func TestErrorsMapToStatusCodes(t *testing.T) {
	_, rdb := testkit.Mini(t)
	testkit.StartWorker(t, rdb, worker.Config{})
	c := serve(t, rdb, exporter.WithMaxSize(100))
	_, b := c.do("POST", "/exports", "alice", "exporter", strings.NewReader("done soon"))
	done := status(t, b)
	for done.State != exporter.StateComplete {
		time.Sleep(10 * time.Millisecond)
		_, b = c.do("GET", "/exports/"+done.ID, "alice", "", nil)
		done = status(t, b)
	}
	idle := serve(t, rdb, exporter.WithQueue("nobody-serves-this"))
	_, b = idle.do("POST", "/exports", "alice", "exporter", strings.NewReader("queued"))
	queued := status(t, b)

	cases := []struct {
		name, method, path, user, perms string
		body                            io.Reader
		want                            int
		contains                        string
	}{
		{"no identity", "GET", "/exports/" + done.ID, "", "", nil, 401, "X-User"},
		{"no permission to start", "POST", "/exports", "bob", "", strings.NewReader("x"), 403, "permission denied"},
		{"too large", "POST", "/exports", "alice", "exporter", bytes.NewReader(make([]byte, 101)), 413, "size limit"},
		{"malformed id", "GET", "/exports/not-a-uuid", "alice", "", nil, 400, "invalid export id"},
		{"upper-case id", "GET", "/exports/" + strings.ToUpper(done.ID), "alice", "", nil, 400, "invalid export id"},
		{"unknown id", "GET", "/exports/0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c", "alice", "", nil, 404, "no export found for id"},
		{"another user's export", "GET", "/exports/" + done.ID, "bob", "exporter", nil, 403, "permission denied"},
		{"another user's cancel", "DELETE", "/exports/" + queued.ID, "bob", "exporter", nil, 403, "permission denied"},
		{"download before complete", "GET", "/exports/" + queued.ID + "/data", "alice", "", nil, 409, "not complete"},
		{"cancel after complete", "DELETE", "/exports/" + done.ID, "alice", "", nil, 409, "COMPLETE"},
		{"cancel", "DELETE", "/exports/" + queued.ID, "alice", "", nil, 200, `"state": "CANCELLED"`},
		{"cancel again", "DELETE", "/exports/" + queued.ID, "alice", "", nil, 200, `"state": "CANCELLED"`},
		{"wrong method", "PUT", "/exports/" + done.ID, "alice", "", nil, 405, ""},
	}
	for _, tc := range cases {
		resp, b := c.do(tc.method, tc.path, tc.user, tc.perms, tc.body)
		if resp.StatusCode != tc.want || !strings.Contains(string(b), tc.contains) {
			t.Errorf("%s: %d %s, want %d containing %q", tc.name, resp.StatusCode, b, tc.want, tc.contains)
		}
	}
	testkit.AssertTTLs(t, rdb)
}

// brokenBody fails part way, like a client that drops the connection.
type brokenBody struct{ n int }

func (b *brokenBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errors.New("connection reset by client")
	}
	k := min(len(p), b.n)
	b.n -= k
	return k, nil
}

func TestABrokenUploadIsTheClientsErrorAndLeavesNoKey(t *testing.T) {
	_, rdb := testkit.Mini(t)
	c := serve(t, rdb)
	req, _ := http.NewRequest("POST", c.base+"/exports", &brokenBody{n: 300 << 10})
	req.Header.Set(httpapi.HeaderUser, "alice")
	req.Header.Set(httpapi.HeaderPermissions, "exporter")
	req.ContentLength = 1 << 20 // the client promised more than it sends
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("broken upload: %d %s, want 400", resp.StatusCode, b)
		}
	}
	// The server notices the broken body and cleans up, soon.
	deadline := time.Now().Add(5 * time.Second)
	for len(testkit.ExportKeys(t, rdb)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	testkit.AssertNoKeys(t, rdb)
}
