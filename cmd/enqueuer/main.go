// Command enqueuer is the caller's side of the export service: it starts
// exports, shows their status, downloads and cancels them, and runs a
// self-contained demo. See README.md for the reference.
//
//	enqueuer demo     [--file FILE] [--cancel-after D] [--max-rate N] [--chunk-size N]
//	enqueuer start    [--wait] FILE|-
//	enqueuer status   ID
//	enqueuer download [-o FILE] ID
//	enqueuer cancel   ID
//
// Flags come before positional arguments. Exit codes: 0 success, 1 any
// failure, 2 a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/exportsvc/exportsvc/exporter"
	"github.com/exportsvc/exportsvc/internal/cliutil"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once
	}()
	// go-redis has one logger per process; its dial-retry lines would
	// repeat the one error line a failed command prints: debug only.
	cliutil.RouteRedisLogs(cliutil.NewLogger(os.Stderr, envLevel()), slog.LevelDebug)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// envLevel is the level $LOG_LEVEL names, warn by default.
func envLevel() slog.Level {
	l := cliutil.Level{Level: slog.LevelWarn}
	if v := os.Getenv("LOG_LEVEL"); v != "" {
		l.Set(v) // a bad value is reported by the command's own flag parsing
	}
	return l.Level
}

// cli is one invocation: its streams and context.
type cli struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

const usage = `usage: enqueuer <command> [flags] [arguments]

commands:
  demo     [--file FILE] [--cancel-after D] [--max-rate N] [--chunk-size N]
           export FILE (default: a generated sample) through an embedded
           Redis and worker, and check the result's SHA-256
  start    [--wait] FILE|-     start an export of FILE (- is stdin); print its id
  status   ID                  print an export's status as JSON
  download [-o FILE] ID        write a COMPLETE export's bytes to FILE or stdout
  cancel   ID                  cancel a queued or running export; print its status
  serve    [--addr ADDR]       serve the same operations over HTTP (POST/GET/DELETE /exports)

Flags come before arguments; "enqueuer <command> -h" lists a command's flags.
Exit codes: 0 success, 1 failure, 2 usage error.
`

// run executes one command line and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	c := &cli{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmds := map[string]func([]string) error{
		"demo":     c.demo,
		"start":    c.start,
		"status":   c.status,
		"download": c.download,
		"cancel":   c.cancel,
		"serve":    c.serve,
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	cmd, ok := cmds[name]
	if !ok {
		fmt.Fprint(stderr, usage)
		return c.exit(cliutil.UsageError("unknown command %q", name))
	}
	return c.exit(cmd(rest))
}

// errHelp ends a command after -h printed its flags; the exit code is 0.
var errHelp = errors.New("help requested")

// errReported ends a command whose failure is already on stderr.
var errReported = errors.New("failure already reported")

// exit prints err as one line on stderr and returns the exit code.
func (c *cli) exit(err error) int {
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errReported):
		return 1
	}
	fmt.Fprintf(c.stderr, "enqueuer: %s\n", cliutil.OneLine(message(err)))
	if errors.Is(err, cliutil.ErrUsage) {
		return 2
	}
	return 1
}

// message turns an error into what the user reads. The exporter's errors
// already name the id, user or state after their sentinel's text; a hint
// is added where one helps.
func message(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, cliutil.ErrUsage):
		return cliutil.Message(err)
	case errors.Is(err, exporter.ErrNotFound):
		return msg + " (never created, or expired after its retention time)"
	case errors.Is(err, exporter.ErrInvalidID):
		return msg + " (like 0b6f5cbe-4e0f-4a4f-9f8e-3c1d2a5b7e90)"
	case errors.Is(err, exporter.ErrPermissionDenied),
		errors.Is(err, exporter.ErrNotCancellable),
		errors.Is(err, exporter.ErrTooLarge):
		return msg
	case errors.Is(err, exporter.ErrNotComplete):
		return msg + " (only a COMPLETE export can be downloaded; see \"enqueuer status\")"
	case errors.Is(err, context.Canceled):
		return "interrupted"
	}
	return msg
}

// newFlags returns a command's flag set; parse it with c.parse.
func (c *cli) newFlags(name, args, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: enqueuer %s\n\n%s\n\nflags (before arguments):\n", strings.TrimSpace(name+" [flags] "+args), about)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args into fs, applies the environment and checks the
// number of positional arguments. A usage error prints the command's usage,
// then (through exit) one line that says what is wrong.
func (c *cli) parse(fs *flag.FlagSet, args []string, env map[string]string, nargs int) error {
	fs.SetOutput(io.Discard) // flag would print its error before the usage
	err := fs.Parse(args)
	fs.SetOutput(c.stderr)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(c.stdout)
		fs.Usage()
		return errHelp
	}
	if err != nil {
		fs.Usage()
		return cliutil.UsageError("%s: %v", fs.Name(), err)
	}
	if err := cliutil.ApplyEnv(fs, env); err != nil {
		return err
	}
	if fs.NArg() != nargs {
		fs.Usage()
		if fs.NArg() < nargs {
			return cliutil.UsageError("%s: missing argument", fs.Name())
		}
		return cliutil.UsageError("%s: unexpected argument %s (flags go before arguments)", fs.Name(), cliutil.QuoteArg(fs.Arg(nargs)))
	}
	return nil
}
