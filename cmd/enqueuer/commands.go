package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/cliutil"
)

// pollInterval is how often start --wait polls the status.
const pollInterval = 500 * time.Millisecond

// connFlags are the flags every command that talks to a Redis takes.
type connFlags struct {
	redisURL     *string
	queue        *string
	user         *string
	permissions  *string
	activeTTL    *time.Duration
	retentionTTL *time.Duration
	logLevel     cliutil.Level
	env          map[string]string
}

func addConnFlags(fs *flag.FlagSet) *connFlags {
	cf := &connFlags{
		redisURL:     fs.String("redis", cliutil.DefaultRedisURL, "Redis URL, redis:// or rediss:// (env REDIS_URL)"),
		queue:        fs.String("queue", exporter.DefaultQueue, "asynq queue exports are enqueued on (env EXPORT_QUEUE)"),
		user:         fs.String("user", "", "user the command runs for (env EXPORT_USER; default $USER, else the login name)"),
		permissions:  fs.String("permissions", exporter.PermissionExport, "the user's permissions, comma-separated; \"exporter:admin\" reads and cancels anyone's exports (env EXPORT_PERMISSIONS)"),
		activeTTL:    fs.Duration("active-ttl", 0, "TTL of a queued or running export's keys, as the workers use it; 0 is the default, 24h (env EXPORT_ACTIVE_TTL)"),
		retentionTTL: fs.Duration("retention-ttl", 0, "how long a finished export is kept, as the workers keep it; 0 is the default, 1h (env EXPORT_RETENTION_TTL)"),
		// Warn: the exporter's info lines would drown the command's output.
		logLevel: cliutil.Level{Level: slog.LevelWarn},
		env: map[string]string{
			"redis": "REDIS_URL", "queue": "EXPORT_QUEUE", "user": "EXPORT_USER",
			"permissions": "EXPORT_PERMISSIONS", "active-ttl": "EXPORT_ACTIVE_TTL",
			"retention-ttl": "EXPORT_RETENTION_TTL", "log-level": "LOG_LEVEL",
		},
	}
	fs.Var(&cf.logLevel, "log-level", "level of the exporter's JSON log lines on stderr: debug, info, warn or error (env LOG_LEVEL)")
	return cf
}

// User returns the user the flags name.
func (cf *connFlags) User() (exporter.User, error) {
	id := *cf.user
	if id == "" {
		id = os.Getenv("USER")
	}
	if id == "" {
		if u, err := user.Current(); err == nil {
			id = u.Username
		}
	}
	if id == "" {
		return exporter.User{}, cliutil.UsageError("no user: pass --user or set EXPORT_USER")
	}
	var perms []string
	for _, p := range strings.Split(*cf.permissions, ",") {
		if p = strings.TrimSpace(p); p != "" {
			perms = append(perms, p)
		}
	}
	return exporter.User{ID: id, Permissions: perms}, nil
}

// open connects to Redis and builds the exporter; close releases both.
func (c *cli) open(cf *connFlags) (e *exporter.Exporter, u exporter.User, close func(), err error) {
	if u, err = cf.User(); err != nil {
		return nil, u, nil, err
	}
	if *cf.activeTTL < 0 || *cf.retentionTTL < 0 {
		return nil, u, nil, cliutil.UsageError("--active-ttl and --retention-ttl must not be negative")
	}
	rdb, err := cliutil.OpenRedis(c.ctx, *cf.redisURL, 5*time.Second)
	if err != nil {
		return nil, u, nil, err
	}
	e, err = c.newExporter(rdb, cf)
	if err != nil {
		rdb.Close()
		return nil, u, nil, err
	}
	return e, u, func() { rdb.Close() }, nil
}

func (c *cli) newExporter(rdb redis.UniversalClient, cf *connFlags, extra ...exporter.Option) (*exporter.Exporter, error) {
	opts := []exporter.Option{
		exporter.WithLogger(cliutil.NewLogger(c.stderr, cf.logLevel.Level)),
		exporter.WithQueue(*cf.queue),
	}
	if *cf.activeTTL > 0 {
		opts = append(opts, exporter.WithActiveTTL(*cf.activeTTL))
	}
	if *cf.retentionTTL > 0 {
		opts = append(opts, exporter.WithRetentionTTL(*cf.retentionTTL))
	}
	return exporter.New(rdb, append(opts, extra...)...)
}

func (c *cli) start(args []string) error {
	fs := c.newFlags("start", "FILE|-",
		"Stages FILE (- reads stdin) in Redis, enqueues its export and prints the\nexport id on stdout. With --wait it then prints progress on stderr every\n500ms until the export ends, and exits 1 unless it ends COMPLETE.")
	wait := fs.Bool("wait", false, "wait for the export to end, printing progress on stderr")
	cf := addConnFlags(fs)
	if err := c.parse(fs, args, cf.env, 1); err != nil {
		return err
	}
	var src io.Reader = c.stdin
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			return fmt.Errorf("%s is a directory, not a file", name)
		}
		src = f
	}
	e, u, closeRedis, err := c.open(cf)
	if err != nil {
		return err
	}
	defer closeRedis()
	st, err := e.StartExport(c.ctx, u, src)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.stdout, st.ID)
	if !*wait {
		return nil
	}
	fmt.Fprintln(c.stderr, progress(st))
	end, err := c.waitTerminal(e, u, st.ID)
	if err != nil {
		return err
	}
	if end.State != exporter.StateComplete {
		reason := ""
		if end.Error != "" {
			reason = ": " + end.Error
		}
		return fmt.Errorf("export %s ended %s%s", end.ID, end.State, reason)
	}
	return nil
}

// waitTerminal polls the export every pollInterval, printing each status
// on stderr, until it ends.
func (c *cli) waitTerminal(e *exporter.Exporter, u exporter.User, id string) (exporter.Status, error) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return exporter.Status{}, fmt.Errorf("stopped waiting; export %s goes on (\"enqueuer cancel %s\" stops it)", id, id)
		case <-t.C:
		}
		st, err := e.GetExportStatus(c.ctx, u, id)
		if err != nil {
			return st, err
		}
		fmt.Fprintln(c.stderr, progress(st))
		if st.State.Terminal() {
			return st, nil
		}
	}
}

// progress is one line of an export's progress.
func progress(st exporter.Status) string {
	pct := 100.0
	if st.TotalBytes > 0 {
		pct = 100 * float64(st.BytesCopied) / float64(st.TotalBytes)
	}
	line := fmt.Sprintf("%s %-9s %d/%d bytes (%5.1f%%)  chunks %d/%d",
		st.ID, st.State, st.BytesCopied, st.TotalBytes, pct, st.Chunks, st.TotalChunks)
	if st.Error != "" {
		line += "  error: " + st.Error
	}
	return line
}

func (c *cli) status(args []string) error {
	return c.withExport(args, "status", "Prints the export's status as indented JSON.", (*exporter.Exporter).GetExportStatus)
}

func (c *cli) cancel(args []string) error {
	return c.withExport(args, "cancel",
		"Cancels a queued or running export and prints its final status as JSON.\nOnce it returns, the export's data never grows again and is deleted.",
		(*exporter.Exporter).CancelExport)
}

// withExport runs a command that takes one export id, applies op to it and
// prints the status op returns.
func (c *cli) withExport(args []string, name, desc string,
	op func(*exporter.Exporter, context.Context, exporter.User, string) (exporter.Status, error)) error {
	fs := c.newFlags(name, "ID", desc)
	cf := addConnFlags(fs)
	if err := c.parse(fs, args, cf.env, 1); err != nil {
		return err
	}
	e, u, closeRedis, err := c.open(cf)
	if err != nil {
		return err
	}
	defer closeRedis()
	st, err := op(e, c.ctx, u, fs.Arg(0))
	if err != nil {
		return err
	}
	return c.printJSON(st)
}

func (c *cli) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = c.stdout.Write(append(b, '\n'))
	return err
}

func (c *cli) download(args []string) error {
	fs := c.newFlags("download", "ID",
		"Writes a COMPLETE export's bytes to stdout, or to -o FILE. The bytes are\nchecked against the source's size and SHA-256; a failed download leaves\nno FILE behind (it is written under a temporary name, then renamed).")
	out := fs.String("o", "", "write to FILE (mode 0600) instead of stdout")
	cf := addConnFlags(fs)
	if err := c.parse(fs, args, cf.env, 1); err != nil {
		return err
	}
	e, u, closeRedis, err := c.open(cf)
	if err != nil {
		return err
	}
	defer closeRedis()
	rc, err := e.OpenExportData(c.ctx, u, fs.Arg(0))
	if err != nil {
		return err
	}
	defer rc.Close()
	if *out == "" || *out == "-" {
		if _, err := io.Copy(c.stdout, rc); err != nil {
			return fmt.Errorf("download of %s failed part way (the output is incomplete): %w", fs.Arg(0), err)
		}
		return nil
	}
	return writeFile(*out, rc)
}

// writeFile writes r to a temporary file beside name and renames it to
// name once r is read to its end and the bytes are on disk.
func writeFile(name string, r io.Reader) (err error) {
	if fi, err := os.Stat(name); err == nil && fi.IsDir() {
		return fmt.Errorf("%s is a directory", name)
	}
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".part-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := io.Copy(f, r); err != nil {
		return fmt.Errorf("download failed, %s not written: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}
