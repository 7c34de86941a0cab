// Package httpapi serves the exporter API over HTTP for callers that are
// not Go services: start, status, download and cancel.
//
//	POST   /exports            body: the bytes to export      201 + status
//	GET    /exports/{id}                                       200 + status
//	GET    /exports/{id}/data  a COMPLETE export's bytes      200 + bytes
//	DELETE /exports/{id}       cancel                          200 + status
//
// The caller's identity comes from the X-User and X-Permissions
// (comma-separated) headers, which an authenticating proxy in front of
// this server must set and strip from what clients send: the server
// itself authenticates nobody.
package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/exportsvc/exportsvc/exporter"
)

// Header names that carry the caller's identity.
const (
	HeaderUser        = "X-User"
	HeaderPermissions = "X-Permissions"
)

// New returns the API's handler on e.
func New(e *exporter.Exporter, log *slog.Logger) http.Handler {
	a := &api{e: e, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /exports", a.start)
	mux.HandleFunc("GET /exports/{id}", a.status)
	mux.HandleFunc("GET /exports/{id}/data", a.download)
	mux.HandleFunc("DELETE /exports/{id}", a.cancel)
	return mux
}

type api struct {
	e   *exporter.Exporter
	log *slog.Logger
}

// user reads the caller's identity, or answers 401 and returns false.
func (a *api) user(w http.ResponseWriter, r *http.Request) (exporter.User, bool) {
	u := exporter.User{ID: r.Header.Get(HeaderUser)}
	if u.ID == "" {
		writeError(w, http.StatusUnauthorized, "missing "+HeaderUser+" header: the proxy in front of this API must say who is asking")
		return u, false
	}
	for _, p := range strings.Split(r.Header.Get(HeaderPermissions), ",") {
		if p = strings.TrimSpace(p); p != "" {
			u.Permissions = append(u.Permissions, p)
		}
	}
	return u, true
}

func (a *api) start(w http.ResponseWriter, r *http.Request) {
	u, ok := a.user(w, r)
	if !ok {
		return
	}
	body := &bodyReader{r: r.Body}
	st, err := a.e.StartExport(r.Context(), u, body)
	if err != nil {
		if berr := body.failed(); berr != nil {
			// The client's upload broke (or it went away): its fault, not ours.
			writeError(w, http.StatusBadRequest, "reading the request body failed: "+berr.Error())
			return
		}
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/exports/"+st.ID)
	writeJSON(w, http.StatusCreated, st)
}

func (a *api) status(w http.ResponseWriter, r *http.Request) {
	u, ok := a.user(w, r)
	if !ok {
		return
	}
	st, err := a.e.GetExportStatus(r.Context(), u, r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *api) cancel(w http.ResponseWriter, r *http.Request) {
	u, ok := a.user(w, r)
	if !ok {
		return
	}
	st, err := a.e.CancelExport(r.Context(), u, r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (a *api) download(w http.ResponseWriter, r *http.Request) {
	u, ok := a.user(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	st, err := a.e.GetExportStatus(r.Context(), u, id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	rc, err := a.e.OpenExportData(r.Context(), u, id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(st.TotalBytes, 10))
	w.Header().Set("X-Export-SHA256", st.SHA256)
	w.WriteHeader(http.StatusOK)
	if _, err := io.Copy(w, rc); err != nil {
		// The bytes sent so far cannot be taken back: abort the response
		// so the client sees a broken transfer, not a short file.
		a.log.Error("export download failed part way", "export_id", id, "error", err.Error())
		panic(http.ErrAbortHandler)
	}
}

// bodyReader remembers the error a request body failed with. StartExport
// reads it on a goroutine of its own, which may outlive the call.
type bodyReader struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.mu.Lock()
		b.err = err
		b.mu.Unlock()
	}
	return n, err
}

func (b *bodyReader) failed() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// fail maps an exporter error to a status code and a one-line message.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, exporter.ErrInvalidID):
		code = http.StatusBadRequest
	case errors.Is(err, exporter.ErrPermissionDenied):
		code = http.StatusForbidden
	case errors.Is(err, exporter.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, exporter.ErrNotCancellable), errors.Is(err, exporter.ErrNotComplete):
		code = http.StatusConflict
	case errors.Is(err, exporter.ErrTooLarge):
		code = http.StatusRequestEntityTooLarge
	}
	msg := err.Error()
	if code == http.StatusInternalServerError {
		a.log.Error("export request failed", "method", r.Method, "path", r.URL.Path, "error", msg)
		msg = "internal error; see the server's log"
	}
	writeError(w, code, msg)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
