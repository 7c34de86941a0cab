package attack_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/exportsvc/exportsvc/internal/testkit"
)

type quietRedisLogger struct{ l *log.Logger }

func (q quietRedisLogger) Printf(_ context.Context, format string, v ...any) {
	q.l.Output(2, fmt.Sprintf(format, v...))
}

// TestMain silences go-redis's dial-retry lines (the tests kill Redis on
// purpose) unless TESTLOG is set.
func TestMain(m *testing.M) {
	if os.Getenv("TESTLOG") == "" {
		redis.SetLogger(quietRedisLogger{log.New(io.Discard, "", 0)})
	}
	code := m.Run()
	testkit.RemoveBinaries()
	os.Exit(code)
}
