package tasks

import (
	"context"
	"time"
)

// throttle paces one export to a byte rate; the zero rate is no limit.
type throttle struct {
	rate  int64
	start time.Time
}

func newThrottle(bytesPerSecond int64) *throttle {
	return &throttle{rate: bytesPerSecond, start: time.Now()}
}

// wait sleeps until copied bytes are due at the rate, or until ctx is done
// or stop is closed.
func (t *throttle) wait(ctx context.Context, stop <-chan struct{}, copied int64) {
	if t.rate <= 0 {
		return
	}
	due := t.start.Add(time.Duration(float64(copied) / float64(t.rate) * float64(time.Second)))
	d := time.Until(due)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	case <-stop:
	}
}
