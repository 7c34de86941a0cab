package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/exportsvc/exportsvc/internal/cliutil"
	"github.com/exportsvc/exportsvc/internal/httpapi"
)

// serve runs the HTTP API until the command's context ends.
func (c *cli) serve(args []string) error {
	fs := c.newFlags("serve", "",
		"Serves the export API over HTTP (see README.md): POST /exports, GET /exports/{id},\n"+
			"GET /exports/{id}/data, DELETE /exports/{id}. The caller's identity comes from the\n"+
			"X-User and X-Permissions headers, which an authenticating proxy must set;\n"+
			"--user and --permissions do not apply.")
	cf := addConnFlags(fs)
	addr := fs.String("addr", "127.0.0.1:8080", "address to listen on (env EXPORT_HTTP_ADDR)")
	cf.env["addr"] = "EXPORT_HTTP_ADDR"
	if err := c.parse(fs, args, cf.env, 0); err != nil {
		return err
	}
	if *cf.activeTTL < 0 || *cf.retentionTTL < 0 {
		return cliutil.UsageError("--active-ttl and --retention-ttl must not be negative")
	}
	rdb, err := cliutil.OpenRedis(c.ctx, *cf.redisURL, 5*time.Second)
	if err != nil {
		return err
	}
	defer rdb.Close()
	e, err := c.newExporter(rdb, cf)
	if err != nil {
		return err
	}
	log := cliutil.NewLogger(c.stderr, cf.logLevel.Level)
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("cannot listen on %s: %w", *addr, err)
	}
	srv := &http.Server{Handler: httpapi.New(e, log), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(c.stderr, "enqueuer: serving the export API on http://%s\n", l.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case err := <-done:
		return err
	case <-c.ctx.Done():
	}
	// Let requests in flight finish (a start stages its whole body) for a while.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	<-done
	return nil
}
