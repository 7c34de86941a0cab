package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Summary is the outcome of a run.
type Summary struct {
	Seed    uint64
	Dir     string // the run's temp dir: worker logs, Redis AOF and log
	Kept    bool   // Dir was kept
	Started time.Time
	Elapsed time.Duration
	Blows   []*BlowResult
}

// Bad lists every broken invariant of the run.
func (s *Summary) Bad() []string {
	var out []string
	for _, r := range s.Blows {
		if r.bad() > 0 {
			for _, p := range r.Problems {
				out = append(out, fmt.Sprintf("blow %d (%s): %s", r.N, r.Kind, p))
			}
		}
	}
	return out
}

type tally struct {
	blows, exports, affected                                                       int
	complete, failed, cancelled, corrupted, dupTrunc, stuck, lost, noTTL, otherBad int
	resumes, recoveries                                                            []time.Duration
	fenced, byState, interrupted                                                   int
}

// Table writes the per-kind table of outcomes and recovery times.
func (s *Summary) Table(w io.Writer) {
	var t [len(kindsTable)]tally
	var total tally
	for _, r := range s.Blows {
		for _, x := range []*tally{&t[r.Kind], &total} {
			x.blows++
			x.exports += len(r.Exports)
			x.affected += len(r.Affected)
			x.complete += r.Complete
			x.failed += r.Failed
			x.cancelled += r.Cancelled
			x.corrupted += r.Corrupted
			x.dupTrunc += r.DupTrunc
			x.stuck += r.Stuck
			x.lost += r.Lost
			x.noTTL += len(r.NoTTL)
			x.otherBad += r.OtherBad
			x.resumes = append(x.resumes, r.Resumes...)
			if r.Recovery >= 0 {
				x.recoveries = append(x.recoveries, r.Recovery)
			}
			x.fenced += r.Fenced
			x.byState += r.RefusedByState
			x.interrupted += r.Interrupted
		}
	}
	fmt.Fprintf(w, "\nchaos: %d blows in %s, seed %d\n\n", len(s.Blows), s.Elapsed.Round(time.Second), s.Seed)
	head := []string{"blow", "blows", "exports", "on victim", "COMPLETE ok", "FAILED", "CANCELLED", "corrupted", "dup/trunc", "stuck", "lost", "no TTL", "other bad"}
	rows := [][]string{head}
	row := func(name string, x tally) []string {
		return []string{name, itoa(x.blows), itoa(x.exports), itoa(x.affected), itoa(x.complete), itoa(x.failed), itoa(x.cancelled),
			itoa(x.corrupted), itoa(x.dupTrunc), itoa(x.stuck), itoa(x.lost), itoa(x.noTTL), itoa(x.otherBad)}
	}
	for _, k := range kindsTable {
		if t[k].blows > 0 {
			rows = append(rows, row(k.String(), t[k]))
		}
	}
	rows = append(rows, row("total", total))
	printRows(w, rows)

	fmt.Fprintln(w)
	rows = [][]string{{"recovery", "measured", "n", "min", "median", "max"}}
	for _, k := range kindsTable {
		if t[k].blows == 0 {
			continue
		}
		what := map[Kind]string{
			KindKill:  "SIGKILL -> export claimed by another worker",
			KindStop:  "SIGSTOP -> export claimed by another worker",
			KindTerm:  "SIGTERM -> export claimed by another worker",
			KindRedis: "restart -> failed attempt's export claimed again",
		}[k]
		rows = append(rows, append([]string{k.String(), what}, stats(t[k].resumes)...))
		if k == KindRedis {
			rows = append(rows, append([]string{"", "restart -> every export of the blow finished"}, stats(t[k].recoveries)...))
		}
	}
	printRows(w, rows)
	if t[KindStop].blows > 0 {
		x := t[KindStop]
		fmt.Fprintf(w, "\nSIGSTOP: the thawed workers' attempts on the %d exports taken from them ended: %d refused by the fence token, %d refused by state (already ended), %d interrupted before writing\n",
			x.affected, x.fenced, x.byState, x.interrupted)
	}
	var notes []string
	for _, r := range s.Blows {
		for _, n := range r.Notes {
			if strings.Contains(n, "FAILED") || strings.Contains(n, "not claimed") || strings.Contains(n, "retried") || strings.Contains(n, "still there") || strings.Contains(n, "no event") || strings.Contains(n, "anyway") || strings.Contains(n, "random") {
				notes = append(notes, fmt.Sprintf("blow %d (%s): %s", r.N, r.Kind, n))
			}
		}
	}
	if len(notes) > 0 {
		fmt.Fprintf(w, "\nnotes:\n  %s\n", strings.Join(notes, "\n  "))
	}
	if bad := s.Bad(); len(bad) > 0 {
		fmt.Fprintf(w, "\nBAD OUTCOMES (%d):\n  %s\n", len(bad), strings.Join(bad, "\n  "))
	}
	if s.Kept {
		fmt.Fprintf(w, "\nworker logs, Redis log and AOF kept in %s\n", s.Dir)
	}
}

var kindsTable = [...]Kind{KindKill, KindStop, KindTerm, KindRedis}

func stats(ds []time.Duration) []string {
	if len(ds) == 0 {
		return []string{"0", "-", "-", "-"}
	}
	ds = slices.Sorted(slices.Values(ds))
	f := func(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }
	return []string{itoa(len(ds)), f(ds[0]), f(ds[len(ds)/2]), f(ds[len(ds)-1])}
}

func itoa(n int) string { return fmt.Sprint(n) }

// printRows prints rows as columns, the first left-aligned, others right.
func printRows(w io.Writer, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	for j, r := range rows {
		var b strings.Builder
		for i, c := range r {
			if i == 0 || (i == 1 && len(rows[0]) == 6) {
				fmt.Fprintf(&b, "%-*s  ", widths[i], c)
			} else {
				fmt.Fprintf(&b, "%*s  ", widths[i], c)
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
		if j == 0 {
			n := 0
			for _, x := range widths {
				n += x + 2
			}
			fmt.Fprintln(w, strings.Repeat("-", n-2))
		}
	}
}
