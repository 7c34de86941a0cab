// Package cliutil holds what cmd/enqueuer and cmd/worker share: flags that
// fall back to environment variables, byte-size and log-level flag values,
// and a Redis client built from a URL whose password never reaches a log
// line or an error message.
package cliutil

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultRedisURL is the Redis both commands use when neither --redis nor
// REDIS_URL says otherwise.
const DefaultRedisURL = "redis://127.0.0.1:6379/0"

// ErrUsage marks an error in the command line (or in an environment
// variable standing in for a flag): the commands exit 2 on it.
var ErrUsage = errors.New("usage error")

// UsageError returns an error that wraps ErrUsage with a message.
func UsageError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// ApplyEnv gives every flag of fs that the command line did not set the
// value of its environment variable, when that variable is set and not
// empty: env maps flag names to variable names. Call it after fs.Parse.
// The command line wins over the environment, which wins over the
// flag's default.
func ApplyEnv(fs *flag.FlagSet, env map[string]string) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for name, key := range env {
		if set[name] || fs.Lookup(name) == nil {
			continue
		}
		v, ok := os.LookupEnv(key)
		if !ok || v == "" {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return UsageError("invalid value for $%s (standing in for --%s): %v", key, name, err)
		}
	}
	return nil
}

// Bytes is a byte count flag. It takes a plain integer (102400) or one
// with a binary unit: KiB, MiB, GiB (also K, M, G, KB, MB, GB, all
// meaning powers of 1024).
type Bytes int64

// ParseBytes parses a byte count as Bytes.Set does.
func ParseBytes(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	upper := strings.ToUpper(t)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30},
		{"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
	} {
		if strings.HasSuffix(upper, u.suffix) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a byte count (want a non-negative integer, optionally with KiB, MiB or GiB)", s)
	}
	if n > (1<<63-1)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}

func (b *Bytes) String() string { return strconv.FormatInt(int64(*b), 10) }

// Set implements flag.Value.
func (b *Bytes) Set(s string) error {
	n, err := ParseBytes(s)
	if err != nil {
		return err
	}
	*b = Bytes(n)
	return nil
}

// Level is a log level flag: debug, info, warn or error.
type Level struct{ slog.Level }

// Set implements flag.Value.
func (l *Level) Set(s string) error {
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return fmt.Errorf("%q is not a log level (want debug, info, warn or error)", s)
	}
	return nil
}

// NewLogger returns a JSON logger on w (stderr in the commands) at level.
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}

// RedactURL returns rawURL with its password, if any, replaced by "xxxxx".
// A URL that does not parse is not shown at all: it may hold a password.
func RedactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL, not shown)"
	}
	return u.Redacted()
}

// QuoteArg quotes a command-line argument for an error message, hiding
// the password of anything that looks like a URL (a misplaced --redis=URL,
// say): arguments may hold secrets too.
func QuoteArg(arg string) string {
	if !strings.Contains(arg, "://") && !strings.Contains(arg, "@") {
		return strconv.Quote(arg)
	}
	prefix, rest := "", arg
	if i := strings.Index(arg, "="); i >= 0 && i < strings.Index(arg, "://") {
		prefix, rest = arg[:i+1], arg[i+1:]
	}
	u, err := url.Parse(rest)
	if err != nil || u.Scheme == "" {
		return "(an argument not shown: it may hold a password)"
	}
	return strconv.Quote(prefix + u.Redacted())
}

// ParseRedisURL parses a redis://, rediss:// or unix:// URL into client
// options. Its errors never repeat the URL, which may hold a password.
func ParseRedisURL(rawURL string) (*redis.Options, error) {
	if _, err := url.Parse(rawURL); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, UsageError("invalid Redis URL (not shown, it may hold a password): %v", err)
	}
	opt, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, UsageError("invalid Redis URL %s: %v", RedactURL(rawURL), err)
	}
	return opt, nil
}

// OpenRedis returns a client for rawURL after checking, within timeout,
// that the server answers. The caller closes it.
func OpenRedis(ctx context.Context, rawURL string, timeout time.Duration) (*redis.Client, error) {
	opt, err := ParseRedisURL(rawURL)
	if err != nil {
		return nil, err
	}
	rdb := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", RedactURL(rawURL), err)
	}
	return rdb, nil
}

// OneLine folds a message onto one line, so that an error is one line
// of stderr whatever it wraps.
func OneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// RouteRedisLogs sends go-redis's own log lines (such as repeated dial
// failures), which it otherwise prints as plain text on stderr, through
// log at level. go-redis has one logger per process: call it from main.
func RouteRedisLogs(log *slog.Logger, level slog.Level) {
	redis.SetLogger(redisLogger{log: log, level: level})
}

type redisLogger struct {
	log   *slog.Logger
	level slog.Level
}

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	r.log.Log(ctx, r.level, OneLine(fmt.Sprintf(format, v...)), "component", "go-redis")
}

// Message is err's text without the ErrUsage prefix, on one line.
func Message(err error) string {
	return OneLine(strings.TrimPrefix(err.Error(), ErrUsage.Error()+": "))
}
