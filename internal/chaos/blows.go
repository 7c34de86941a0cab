package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/exportsvc/exportsvc/exporter"
)

// Kind is a kind of blow.
type Kind int

// The blows the harness deals.
const (
	KindKill  Kind = iota // SIGKILL a worker running exports; replacement after recoverAfter
	KindStop              // SIGSTOP a worker past its lease, SIGCONT once its exports were taken over
	KindTerm              // SIGTERM a worker: graceful hand-back; replacement at once
	KindRedis             // SIGKILL redis-server and start it again on its AOF
)

var kinds = []Kind{KindKill, KindStop, KindTerm, KindRedis}

func (k Kind) String() string {
	return [...]string{"SIGKILL worker", "SIGSTOP worker", "SIGTERM worker", "Redis restart"}[k]
}

// short names, as -kinds takes them.
func (k Kind) short() string { return [...]string{"kill", "stop", "term", "redis"}[k] }

// ParseKind parses a short name: kill, stop, term or redis.
func ParseKind(s string) (Kind, error) {
	for _, k := range kinds {
		if k.short() == s {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unknown blow %q (want kill, stop, term or redis)", s)
}

// RoundRobin returns n blows cycling through of.
func RoundRobin(n int, of []Kind) []Kind {
	out := make([]Kind, n)
	for i := range out {
		out[i] = of[i%len(of)]
	}
	return out
}

// BlowResult is what one blow did and what the checks found.
type BlowResult struct {
	N        int
	Kind     Kind
	Victim   string        // the worker dealt the blow, if any
	Affected []string      // exports running on the victim when the blow fell
	Exports  []*export     // every export of the blow
	Recovery time.Duration // -1 when not measured; see the kinds
	Resumes  []time.Duration
	// outcomes
	Complete, Failed, Cancelled, Corrupted, DupTrunc, Stuck, Lost, OtherBad int
	NoTTL                                                                   map[string]bool
	// SIGSTOP: what the thawed worker did with the exports it had lost
	Fenced, RefusedByState, Interrupted int
	Notes, Problems                     []string
	Elapsed                             time.Duration
}

func (r *BlowResult) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *BlowResult) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// bad counts the exports or keys that break an invariant.
func (r *BlowResult) bad() int {
	return r.Corrupted + r.DupTrunc + r.Stuck + r.Lost + r.OtherBad + len(r.NoTTL)
}

func (r *BlowResult) line() string {
	s := fmt.Sprintf("blow %d %s: victim %s (%d exports running on it); %d exports: %d complete, %d failed, %d cancelled",
		r.N, r.Kind, orNone(r.Victim), len(r.Affected), len(r.Exports), r.Complete, r.Failed, r.Cancelled)
	if len(r.Resumes) > 0 {
		s += fmt.Sprintf("; resumed after %s", durs(r.Resumes))
	}
	if r.Recovery >= 0 {
		s += fmt.Sprintf("; all finished %.1fs after the restart", r.Recovery.Seconds())
	}
	if r.Kind == KindStop {
		s += fmt.Sprintf("; thawed worker: %d fenced, %d refused by state, %d interrupted", r.Fenced, r.RefusedByState, r.Interrupted)
	}
	if b := r.bad(); b > 0 {
		heads := make([]string, len(r.Problems))
		for i, p := range r.Problems {
			heads[i], _, _ = strings.Cut(p, "\n") // the evidence comes with the table
		}
		s += fmt.Sprintf("; %d BAD:\n  %s\n ", b, strings.Join(heads, "\n  "))
	}
	return s + fmt.Sprintf(" (%.0fs)", r.Elapsed.Seconds())
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func durs(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.1fs", d.Seconds())
	}
	return strings.Join(parts, " ")
}

// blow starts a round of exports, deals one blow of kind k while they
// run, restarts what it broke, waits for every export to end and checks
// each.
func (h *harness) blow(ctx context.Context, n int, k Kind) (*BlowResult, error) {
	r := &BlowResult{N: n, Kind: k, Recovery: -1, NoTTL: map[string]bool{}}
	start := time.Now()
	defer func() { r.Elapsed = time.Since(start) }()
	specs := h.plan(h.cfg.Exports)
	exps, err := h.startExports(ctx, specs)
	if err != nil {
		return nil, err
	}
	r.Exports = exps
	want := max(1, min(3, long(specs, h.cfg.MaxSize)))
	if !h.waitProgress(ctx, exps, want, 30*time.Second) {
		r.note("fewer than %d exports were PENDING with progress after 30 s; dealt the blow anyway", want)
	}
	sleep(ctx, h.jitter(1500*time.Millisecond)) // a random moment
	switch k {
	case KindKill:
		err = h.sigkill(ctx, r)
	case KindStop:
		err = h.sigstop(ctx, r)
	case KindTerm:
		err = h.sigterm(ctx, r)
	case KindRedis:
		err = h.restartRedis(ctx, r)
	}
	if err != nil {
		return r, err
	}
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	h.check(ctx, r)
	h.checkTasks(ctx, r)
	if err := h.healPool(r); err != nil {
		return r, err
	}
	h.forget(ctx, r)
	return r, nil
}

// strike picks the worker running the most of the blow's exports, records
// it and the exports it runs, and sends it sig; it returns the worker's
// pool slot, the worker and when it was hit.
func (h *harness) strike(ctx context.Context, r *BlowResult, sig syscall.Signal) (int, *workerProc, time.Time) {
	slot := h.pickVictim(ctx, r)
	v := h.pool[slot]
	r.Victim = v.name
	r.Affected = h.tr.runningOn(v.name, ids(r.Exports))
	at := time.Now()
	v.signal(sig)
	h.logf("blow %d: %s %s (pid %d) with %d exports running on it", r.N, signalName(sig), v.name, v.pid(), len(r.Affected))
	return slot, v, at
}

func signalName(sig syscall.Signal) string {
	switch sig {
	case syscall.SIGKILL:
		return "SIGKILL"
	case syscall.SIGSTOP:
		return "SIGSTOP"
	case syscall.SIGTERM:
		return "SIGTERM"
	}
	return sig.String()
}

// pickVictim returns the pool slot whose worker runs the most of the
// blow's exports (ties broken at random), waiting a few seconds for one
// to run any.
func (h *harness) pickVictim(ctx context.Context, r *BlowResult) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		best, bestN := []int{}, 0
		for i, w := range h.pool {
			n := len(h.tr.runningOn(w.name, ids(r.Exports)))
			switch {
			case n > bestN:
				best, bestN = []int{i}, n
			case n == bestN && n > 0:
				best = append(best, i)
			}
		}
		if bestN > 0 {
			return best[h.rng.IntN(len(best))]
		}
		if time.Now().After(deadline) || !sleep(ctx, 50*time.Millisecond) {
			r.note("no worker ran any export of the blow: victim chosen at random")
			return h.rng.IntN(len(h.pool))
		}
	}
}

// sigkill: SIGKILL a worker running exports; start its replacement
// recoverAfter later, whose start-up recoverer takes the dead worker's
// tasks back; measure kill -> each export's next claim.
func (h *harness) sigkill(ctx context.Context, r *BlowResult) error {
	slot, v, at := h.strike(ctx, r, syscall.SIGKILL)
	v.wait(5 * time.Second)
	h.logf("blow %d: replacement for %s in %v", r.N, v.name, recoverAfter)
	sleep(ctx, h.jitter(2*time.Second))
	h.cancelSome(ctx, r, r.Affected)
	if !sleep(ctx, time.Until(at.Add(recoverAfter))) {
		return ctx.Err()
	}
	w, err := h.replace(slot)
	if err != nil {
		return err
	}
	r.note("replacement %s started %.1fs after the kill", w.name, time.Since(at).Seconds())
	h.waitTerminal(ctx, r, at.Add(4*time.Minute))
	h.resumes(r, at, v.name)
	return nil
}

// sigstop: SIGSTOP a worker running exports and keep it frozen past its
// lease, until every export it ran was claimed anew by another worker (a
// worker started recoverAfter into the freeze takes them at once) or was
// cancelled; then SIGCONT it. Its writes, carrying stale fence tokens,
// must be refused.
func (h *harness) sigstop(ctx context.Context, r *BlowResult) error {
	_, v, at := h.strike(ctx, r, syscall.SIGSTOP)
	sleep(ctx, h.jitter(2*time.Second))
	h.cancelSome(ctx, r, r.Affected)
	if !sleep(ctx, time.Until(at.Add(recoverAfter))) {
		v.signal(syscall.SIGCONT)
		return ctx.Err()
	}
	kick, err := h.startWorker(h.nextName())
	if err != nil {
		v.signal(syscall.SIGCONT)
		return err
	}
	r.note("extra worker %s started %.1fs into the freeze to recover its tasks", kick.name, time.Since(at).Seconds())
	// Thaw only once every lost export has a newer owner (or is cancelled).
	takenOver := func() bool {
		h.poll(ctx, r.Exports)
		for _, id := range r.Affected {
			e := byID(r.Exports, id)
			if e.Final.State == exporter.StateCancelled || e.Final.State == exporter.StateFailed {
				continue
			}
			if _, ok := h.tr.first(id, at, func(ev event) bool { return ev.Kind == "claimed" && ev.Worker != v.name }); !ok {
				return false
			}
		}
		return true
	}
	for !takenOver() && time.Since(at) < 3*time.Minute {
		if !sleep(ctx, 200*time.Millisecond) {
			v.signal(syscall.SIGCONT)
			return ctx.Err()
		}
	}
	thaw := time.Now()
	v.signal(syscall.SIGCONT)
	h.logf("blow %d: SIGCONT %s after %.1fs frozen", r.N, v.name, thaw.Sub(at).Seconds())
	if !takenOver() {
		r.note("thawed after 3 min although not every export it ran was claimed anew")
	}
	h.waitTerminal(ctx, r, at.Add(5*time.Minute))
	h.resumes(r, at, v.name)
	// What did the thawed worker do with the exports it had lost? Each
	// attempt logs how it ended; give it a few seconds.
	ended := func(ev event) bool { return ev.Worker == v.name && ev.Kind != "claimed" }
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); sleep(ctx, 100*time.Millisecond) {
		all := true
		for _, id := range r.Affected {
			if _, ok := h.tr.first(id, thaw, ended); !ok {
				all = false
			}
		}
		if all {
			break
		}
	}
	for _, id := range r.Affected {
		reclaimed := false
		for _, ev := range h.tr.of(id) {
			if ev.Worker != v.name || ev.At.Before(thaw) {
				continue
			}
			switch ev.Kind {
			case "claimed":
				reclaimed = true // a later, legitimate attempt of its own
			case "fenced":
				r.Fenced++
			case "revoked", "cancelled":
				r.RefusedByState++
			case "interrupted":
				r.Interrupted++
			case "complete":
				if !reclaimed {
					r.OtherBad++
					r.problem("export %s: the thawed worker %s completed it under its stale claim: %s", id, v.name, ev.Line)
				}
			}
		}
	}
	if !kick.alive() {
		r.OtherBad++
		r.problem("extra worker %s exited unexpectedly (%s)", kick.name, kick.exitStatus())
	} else {
		kick.signal(syscall.SIGTERM)
		if !kick.wait(15 * time.Second) {
			r.problem("extra worker %s did not stop within 15 s of SIGTERM", kick.name)
			kick.signal(syscall.SIGKILL)
		}
	}
	return nil
}

// sigterm: SIGTERM a worker running exports; it hands them back at the
// next batch boundary and exits; a replacement starts at once. Measures
// signal -> each export's next claim by another worker.
func (h *harness) sigterm(ctx context.Context, r *BlowResult) error {
	slot, v, at := h.strike(ctx, r, syscall.SIGTERM)
	h.cancelSome(ctx, r, r.Affected)
	if !v.wait(15 * time.Second) {
		r.OtherBad++
		r.problem("worker %s did not exit within 15 s of SIGTERM (--shutdown-timeout 10s)", v.name)
		v.signal(syscall.SIGKILL)
		v.wait(5 * time.Second)
	} else {
		r.note("%s exited %.2fs after SIGTERM (%s)", v.name, time.Since(at).Seconds(), v.exitStatus())
		if v.exitErr != nil {
			r.OtherBad++
			r.problem("worker %s ended with %s after SIGTERM, want exit 0", v.name, v.exitStatus())
		}
	}
	if _, err := h.replace(slot); err != nil {
		return err
	}
	h.waitTerminal(ctx, r, at.Add(2*time.Minute))
	h.resumes(r, at, v.name)
	for _, id := range r.Affected {
		e := byID(r.Exports, id)
		if _, ok := h.tr.first(id, at, func(ev event) bool { return ev.Worker == v.name && ev.Kind != "claimed" }); !ok {
			r.note("export %s (%s): no event from %s after SIGTERM", id, e.Final.State, v.name)
		}
	}
	return nil
}

// restartRedis: SIGKILL redis-server while exports run and start it again
// on its AOF. Measures restart -> every export of the blow finished.
func (h *harness) restartRedis(ctx context.Context, r *BlowResult) error {
	h.poll(ctx, r.Exports)
	running := 0
	for _, e := range r.Exports {
		if !e.Done {
			running++
		}
	}
	at := time.Now()
	if err := h.srv.Restart(); err != nil {
		return fmt.Errorf("restarting redis-server: %w", err)
	}
	up := time.Since(at)
	h.logf("blow %d: redis-server SIGKILLed and back on its AOF in %.2fs, %d exports were running", r.N, up.Seconds(), running)
	r.note("redis-server back %.2fs after SIGKILL; %d exports not yet finished then", up.Seconds(), running)
	h.cancelSome(ctx, r, nil)
	h.waitTerminal(ctx, r, at.Add(2*time.Minute))
	var last time.Time
	for _, e := range r.Exports {
		if e.Done && e.Final.FinishedAt.After(last) {
			last = e.Final.FinishedAt
		}
	}
	if last.After(at) {
		r.Recovery = last.Sub(at)
	}
	// The exports whose attempt failed over the restart: when were they
	// claimed again?
	retried := 0
	for _, e := range r.Exports {
		failed, ok := h.tr.first(e.ID, at.Add(-time.Second), func(ev event) bool { return ev.Kind == "retry" || ev.Kind == "interrupted" })
		if !ok {
			continue
		}
		retried++
		if ev, ok := h.tr.first(e.ID, failed.At, func(ev event) bool { return ev.Kind == "claimed" }); ok {
			r.Resumes = append(r.Resumes, ev.At.Sub(at))
		} else if !e.Cancel {
			r.note("export %s (%s): not claimed again after its attempt failed over the restart", e.ID, e.Final.State)
		}
	}
	slices.Sort(r.Resumes)
	r.note("%d exports had an attempt fail over the restart and were retried", retried)
	return nil
}

// resumes records, for each export the victim ran, the time from the blow
// to its next claim by another worker.
func (h *harness) resumes(r *BlowResult, at time.Time, victim string) {
	for _, id := range r.Affected {
		ev, ok := h.tr.first(id, at, func(ev event) bool { return ev.Kind == "claimed" && ev.Worker != victim })
		if ok {
			r.Resumes = append(r.Resumes, ev.At.Sub(at))
			continue
		}
		e := byID(r.Exports, id)
		if e.Cancel {
			continue // cancelled: nothing to resume
		}
		if _, done := h.tr.first(id, at.Add(-time.Second), func(ev event) bool { return ev.Worker == victim && ev.Kind == "complete" }); done {
			continue // finished on the victim as the blow fell
		}
		r.note("export %s (%s): not claimed by another worker after the blow", id, e.Final.State)
	}
	slices.Sort(r.Resumes)
}

func byID(exps []*export, id string) *export {
	for _, e := range exps {
		if e.ID == id {
			return e
		}
	}
	return &export{ID: id}
}
