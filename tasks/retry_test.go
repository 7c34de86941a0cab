package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// redisErr is a reply error as go-redis returns it.
type redisErr string

func (e redisErr) Error() string { return string(e) }
func (redisErr) RedisError()     {}

var _ redis.Error = redisErr("")

func TestHandBacksAndCancelsSpendNoRetryAndWaitNoBackoff(t *testing.T) {
	for _, err := range []error{ErrShutdown, context.Canceled, fmt.Errorf("append: %w", context.Canceled)} {
		if IsFailure(err) {
			t.Errorf("IsFailure(%v) = true, want false", err)
		}
		if d := RetryDelay(3, err, nil); d != 0 {
			t.Errorf("RetryDelay(%v) = %v, want 0", err, d)
		}
	}
}

func TestFailuresBackOffExponentiallyUpToTheCap(t *testing.T) {
	for _, err := range []error{io.EOF, context.DeadlineExceeded, asynq.ErrLeaseExpired} {
		if !IsFailure(err) {
			t.Errorf("IsFailure(%v) = false, want true", err)
		}
	}
	prev := time.Duration(0)
	for n := 0; n < 20; n++ {
		d := RetryDelay(n, io.EOF, nil)
		base := min(time.Second<<min(n, 9), MaxRetryDelay)
		if d < base || d > base+base/4 {
			t.Fatalf("RetryDelay(%d) = %v, want in [%v, %v]", n, d, base, base+base/4)
		}
		if base < prev {
			t.Fatalf("backoff shrank at retry %d", n)
		}
		prev = base
	}
	var total time.Duration
	for n := 0; n < DefaultMaxRetry; n++ {
		total += RetryDelay(n, io.EOF, nil)
	}
	if total > time.Hour {
		t.Fatalf("%d retries wait %v in all, far past what an export should", DefaultMaxRetry, total)
	}
}

func TestOnlyRedisErrorsThatCannotSucceedArePermanent(t *testing.T) {
	permanentErrs := []error{
		redisErr("OOM command not allowed when used memory > 'maxmemory'. script: abc"),
		fmt.Errorf("append: %w", redisErr("OOM command not allowed when used memory > 'maxmemory'.")),
		redisErr("ERR Protocol error: invalid bulk length"),
		redisErr("ERR string exceeds maximum allowed size (proto-max-bulk-len)"),
		redisErr("WRONGTYPE Operation against a key holding the wrong kind of value"),
	}
	for _, err := range permanentErrs {
		if !permanent(err) {
			t.Errorf("permanent(%v) = false", err)
		}
	}
	transient := []error{
		io.EOF, context.DeadlineExceeded, errors.New("dial tcp: connection refused"),
		redisErr("LOADING Redis is loading the dataset in memory"),
		redisErr("BUSY Redis is busy running a script"), redisErr("READONLY You can't write against a read only replica."),
		errors.New("OOM but not from redis"),
	}
	for _, err := range transient {
		if permanent(err) {
			t.Errorf("permanent(%v) = true", err)
		}
	}
}

func TestPayloadsAreValidated(t *testing.T) {
	task, err := NewExportTask("0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c", asynq.Queue("q"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParsePayload(task.Payload())
	if err != nil || p.ExportID != "0b6f3c4e-9f1a-4d2b-8c3e-5a7d9e1f2b3c" || task.Type() != TypeExport {
		t.Fatalf("round trip: %+v, %v", p, err)
	}
	if _, err := NewExportTask("../etc/passwd"); err == nil {
		t.Fatal("a task was built for a malformed id")
	}
	for _, b := range []string{``, `{`, `{"export_id":"*"}`, `{"export_id":"0B6F3C4E-9F1A-4D2B-8C3E-5A7D9E1F2B3C"}`} {
		if _, err := ParsePayload([]byte(b)); err == nil {
			t.Errorf("payload %q accepted", b)
		}
	}
}

func TestHandedBackRecognisesOnlyHandBacks(t *testing.T) {
	for msg, want := range map[string]bool{
		ErrShutdown.Error():                  true,
		"context canceled":                   true,
		"asynq: task lease expired":          false,
		"append: dial tcp: connection reset": false,
		"":                                   false,
	} {
		if got := handedBack(msg); got != want {
			t.Errorf("handedBack(%q) = %v, want %v", msg, got, want)
		}
	}
}
