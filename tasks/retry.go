package tasks

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// ErrShutdown is what the handler returns when its worker is shutting
// down: the task goes back to the queue at once and no retry is spent.
var ErrShutdown = errors.New("tasks: worker shutting down, export handed back")

// MaxRetryDelay caps the backoff between two attempts. With the default
// retry count the sum of delays stays far below the active TTL, so a task
// never outlives its export's keys.
const MaxRetryDelay = 5 * time.Minute

// DefaultMaxRetry is the retry count of an export task.
const DefaultMaxRetry = 10

// IsFailure tells asynq whether err spends a retry. A shutdown hand-back or
// a cancelled context (a caller's cancel, a worker's shutdown) is not a
// failure of the export. Use it as asynq.Config.IsFailure.
func IsFailure(err error) bool {
	return !errors.Is(err, ErrShutdown) && !errors.Is(err, context.Canceled)
}

// RetryDelay is the backoff between attempts: none for a non-failure (so a
// handed-back or cancelled task is picked up, or revoked, within seconds),
// otherwise exponential from one second, capped at MaxRetryDelay, with
// jitter. Use it as asynq.Config.RetryDelayFunc.
func RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	if !IsFailure(err) {
		return 0
	}
	d := time.Second << min(n, 9)
	d = min(d, MaxRetryDelay)
	return d + rand.N(d/4+1)
}

// MaxBackoff is the longest that maxRetry failed attempts can wait between
// them in all, jitter included: the time an export may sit between
// attempts without a claim refreshing its TTL.
func MaxBackoff(maxRetry int) time.Duration {
	var total time.Duration
	for n := range maxRetry {
		d := min(time.Second<<min(n, 9), MaxRetryDelay)
		total += d + d/4
	}
	return total
}

// permanent reports whether a Redis error cannot succeed on retry: retrying
// it for hours would only keep the export PENDING.
func permanent(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	msg := re.Error()
	for _, p := range []string{"OOM ", "WRONGTYPE", "ERR Protocol error", "ERR string exceeds maximum allowed size"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	// A Lua runtime error in one of our scripts means a damaged record
	// (a field that is not a number, say): no retry repairs it.
	return strings.Contains(msg, "proto-max-bulk-len") || strings.Contains(msg, "user_script:")
}
