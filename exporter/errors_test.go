package exporter_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/testkit"
)

// failingReader yields n good bytes, then err.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = 'a'
	}
	r.n -= k
	return k, nil
}

func TestStartExportNeedsThePermission(t *testing.T) {
	_, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb)
	for _, u := range []exporter.User{
		{ID: "carol"},
		{ID: "carol", Permissions: []string{"exporter:read", "Exporter"}},
		{ID: "", Permissions: []string{exporter.PermissionExport}},
	} {
		_, err := e.StartExport(context.Background(), u, strings.NewReader("data"))
		if !errors.Is(err, exporter.ErrPermissionDenied) {
			t.Errorf("user %+v: err = %v, want ErrPermissionDenied", u, err)
		}
	}
	testkit.AssertNoKeys(t, rdb)
}

func TestStartExportWithCustomPermissions(t *testing.T) {
	_, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb, exporter.WithStartPermission("export:write"),
		exporter.WithPermissionChecker(exporter.PermissionFunc(func(u exporter.User, p string) bool {
			return u.ID == "svc" && p == "export:write"
		})))
	if _, err := e.StartExport(context.Background(), alice, strings.NewReader("x")); !errors.Is(err, exporter.ErrPermissionDenied) {
		t.Fatalf("alice: err = %v, want ErrPermissionDenied", err)
	}
	st, err := e.StartExport(context.Background(), exporter.User{ID: "svc"}, strings.NewReader("x"))
	if err != nil || st.State != exporter.StateCreated || st.Owner != "svc" {
		t.Fatalf("svc: status %+v, err %v", st, err)
	}
	testkit.AssertTTLs(t, rdb)
}

func TestStartExportThatFailsPartWayLeavesNoKey(t *testing.T) {
	boom := errors.New("disk on fire")
	cases := map[string]struct {
		r       io.Reader
		opts    []exporter.Option
		wantErr error
	}{
		"reader fails at once":    {r: &failingReader{err: boom}, wantErr: boom},
		"reader fails mid-way":    {r: &failingReader{n: 3<<20 + 5, err: boom}, wantErr: boom},
		"over the size limit":     {r: bytes.NewReader(make([]byte, 1<<20+1)), opts: []exporter.Option{exporter.WithMaxSize(1 << 20)}, wantErr: exporter.ErrTooLarge},
		"over the limit, 1 chunk": {r: strings.NewReader("12345"), opts: []exporter.Option{exporter.WithMaxSize(4)}, wantErr: exporter.ErrTooLarge},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, rdb := testkit.Mini(t)
			e := testkit.NewExporter(t, rdb, tc.opts...)
			st, err := e.StartExport(context.Background(), alice, tc.r)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if st.ID != "" {
				t.Fatalf("got an id (%s) for a failed start", st.ID)
			}
			testkit.AssertNoKeys(t, rdb)
			if n := rdb.Keys(context.Background(), "asynq:*:t:*").Val(); len(n) != 0 {
				t.Fatalf("a task was enqueued for a failed start: %v", n)
			}
		})
	}
}

func TestStartExportAtTheSizeLimitSucceeds(t *testing.T) {
	_, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb, exporter.WithMaxSize(1000), exporter.WithChunkSize(100))
	st, err := e.StartExport(context.Background(), alice, bytes.NewReader(make([]byte, 1000)))
	if err != nil || st.TotalBytes != 1000 || st.TotalChunks != 10 {
		t.Fatalf("status %+v, err %v", st, err)
	}
	testkit.AssertTTLs(t, rdb)
}

func TestStartExportWithACancelledContextLeavesNoKey(t *testing.T) {
	_, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb)
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancelAfter{r: bytes.NewReader(make([]byte, 4<<20)), after: 2 << 20, cancel: cancel}
	if _, err := e.StartExport(ctx, alice, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	testkit.AssertNoKeys(t, rdb)
}

// cancelAfter cancels a context once after bytes were read.
type cancelAfter struct {
	r      io.Reader
	read   int
	after  int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read += n
	if c.read >= c.after {
		c.cancel()
	}
	return n, err
}

func TestBrokenIDGeneratorFailsLoudly(t *testing.T) {
	fixed := "0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c"
	for name, gen := range map[string]func() string{
		"upper case":  func() string { return strings.ToUpper(fixed) },
		"empty":       func() string { return "" },
		"path":        func() string { return "../x" },
		"braced uuid": func() string { return "{" + fixed + "}" },
	} {
		t.Run(name, func(t *testing.T) {
			_, rdb := testkit.Mini(t)
			e := testkit.NewExporter(t, rdb, exporter.WithIDGenerator(gen))
			_, err := e.StartExport(context.Background(), alice, strings.NewReader("x"))
			if err == nil || !strings.Contains(err.Error(), "not a canonical UUID") {
				t.Fatalf("err = %v, want a 'not a canonical UUID' error", err)
			}
			testkit.AssertNoKeys(t, rdb)
		})
	}
	t.Run("repeated id", func(t *testing.T) {
		_, rdb := testkit.Mini(t)
		e := testkit.NewExporter(t, rdb, exporter.WithIDGenerator(func() string { return fixed }))
		first, err := e.StartExport(context.Background(), alice, strings.NewReader("first"))
		if err != nil || first.ID != fixed {
			t.Fatalf("first start: %+v, %v", first, err)
		}
		_, err = e.StartExport(context.Background(), alice, strings.NewReader("second"))
		if err == nil || !strings.Contains(err.Error(), "taken") {
			t.Fatalf("second start: err = %v, want an id-taken error", err)
		}
		// The first export is untouched.
		st, err := e.GetExportStatus(context.Background(), alice, fixed)
		if err != nil || st.TotalBytes != 5 || st.SHA256 != sum([]byte("first")) {
			t.Fatalf("first export after the collision: %+v, %v", st, err)
		}
	})
}

func TestMalformedIDsNeverReachRedis(t *testing.T) {
	m, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb)
	good := uuid.NewString()
	ids := []string{
		"", "../x", "*", "{", "}", "export:*", strings.ToUpper(good), "{" + good + "}",
		"urn:uuid:" + good, strings.ReplaceAll(good, "-", ""), good + " ", " " + good,
		good[:35], good + "0", strings.Repeat("a", 10<<10), good[:8] + "_" + good[9:],
	}
	before := m.CommandCount()
	for _, id := range ids {
		_, err := e.GetExportStatus(context.Background(), admin, id)
		if !errors.Is(err, exporter.ErrInvalidID) {
			t.Errorf("status %.40q: err = %v, want ErrInvalidID", id, err)
		}
		if _, err := e.OpenExportData(context.Background(), admin, id); !errors.Is(err, exporter.ErrInvalidID) {
			t.Errorf("download %.40q: err = %v, want ErrInvalidID", id, err)
		}
		if _, err := e.CancelExport(context.Background(), admin, id); !errors.Is(err, exporter.ErrInvalidID) {
			t.Errorf("cancel %.40q: err = %v, want ErrInvalidID", id, err)
		}
		if err != nil && len(err.Error()) > 200 {
			t.Errorf("error message for a %d-byte id is %d bytes long", len(id), len(err.Error()))
		}
	}
	if got := m.CommandCount(); got != before {
		t.Fatalf("malformed ids caused %d Redis commands, want 0", got-before)
	}
	testkit.AssertNoKeys(t, rdb)
}

func TestUnknownIDIsNotFound(t *testing.T) {
	_, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb)
	id := uuid.NewString()
	_, err := e.GetExportStatus(context.Background(), alice, id)
	if !errors.Is(err, exporter.ErrNotFound) || !strings.Contains(err.Error(), "no export found for id: "+id) {
		t.Fatalf("status: err = %v, want 'no export found for id: %s'", err, id)
	}
	if _, err := e.OpenExportData(context.Background(), alice, id); !errors.Is(err, exporter.ErrNotFound) {
		t.Fatalf("download: err = %v, want ErrNotFound", err)
	}
	if _, err := e.CancelExport(context.Background(), alice, id); !errors.Is(err, exporter.ErrNotFound) {
		t.Fatalf("cancel: err = %v, want ErrNotFound", err)
	}
	testkit.AssertNoKeys(t, rdb)
}

func TestOnlyTheOwnerOrAnAdminSeesAnExport(t *testing.T) {
	_, rdb := testkit.Mini(t)
	e := testkit.NewExporter(t, rdb)
	st, err := e.StartExport(context.Background(), alice, strings.NewReader("alice's data"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []exporter.User{bob, {ID: "alice2"}, {ID: "", Permissions: []string{exporter.PermissionAdmin + "x"}}} {
		if _, err := e.GetExportStatus(context.Background(), u, st.ID); !errors.Is(err, exporter.ErrPermissionDenied) {
			t.Errorf("%q status: err = %v, want ErrPermissionDenied", u.ID, err)
		}
		if _, err := e.OpenExportData(context.Background(), u, st.ID); !errors.Is(err, exporter.ErrPermissionDenied) {
			t.Errorf("%q download: err = %v, want ErrPermissionDenied", u.ID, err)
		}
		if _, err := e.CancelExport(context.Background(), u, st.ID); !errors.Is(err, exporter.ErrPermissionDenied) {
			t.Errorf("%q cancel: err = %v, want ErrPermissionDenied", u.ID, err)
		}
	}
	for _, u := range []exporter.User{alice, admin} {
		got, err := e.GetExportStatus(context.Background(), u, st.ID)
		if err != nil || got.ID != st.ID || got.Owner != "alice" {
			t.Errorf("%q status: %+v, %v", u.ID, got, err)
		}
	}
	// Nobody ran the export: it is still queued, and reading it is refused.
	if _, err := e.OpenExportData(context.Background(), alice, st.ID); !errors.Is(err, exporter.ErrNotComplete) {
		t.Fatalf("download of a CREATED export: err = %v, want ErrNotComplete", err)
	}
	testkit.AssertTTLs(t, rdb)
}

func TestAChunkOverRedisBulkLimitFailsTheStartAndLeavesNoKey(t *testing.T) {
	srv := testkit.StartRedis(t, "--proto-max-bulk-len", "1mb")
	rdb := srv.Client(t)
	e := testkit.NewExporter(t, rdb, exporter.WithChunkSize(2<<20))
	_, err := e.StartExport(context.Background(), alice, bytes.NewReader(make([]byte, 5<<20)))
	if err == nil || !strings.Contains(err.Error(), "staging source") {
		t.Fatalf("err = %v, want a staging error", err)
	}
	t.Logf("start with 2 MiB chunks on a 1 MB proto-max-bulk-len: %v", err)
	testkit.AssertNoKeys(t, rdb)
	// The same Redis takes chunks under its limit.
	small := testkit.NewExporter(t, rdb, exporter.WithChunkSize(512<<10))
	if _, err := small.StartExport(context.Background(), alice, bytes.NewReader(make([]byte, 5<<20))); err != nil {
		t.Fatalf("start with 512 KiB chunks: %v", err)
	}
}
