// Command chaos deals blows to a running export service and checks that
// no export is corrupted, duplicated, truncated, stuck or left without a
// TTL. It starts its own redis-server (AOF, appendfsync always) and three
// cmd/worker processes; for each blow it starts a round of exports of
// random bytes, deals the blow while they run (SIGKILL, SIGSTOP past the
// lease, or SIGTERM of a worker, or a SIGKILL and restart of Redis),
// restarts what it broke, waits for every export to end and checks each
// byte for byte against the SHA-256 of its source. It prints a table per
// kind of blow and exits 1 if any invariant broke. Run it with
// `make chaos`; it takes 15 to 25 minutes with the default 20 blows.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/exportsvc/exportsvc/internal/cliutil"
)

func main() {
	cfg := DefaultConfig()
	blows := flag.Int("blows", 20, "number of blows, cycling through -kinds")
	kindList := flag.String("kinds", "kill,stop,term,redis", "kinds of blow, in turn: kill, stop, term, redis")
	flag.IntVar(&cfg.Exports, "exports", cfg.Exports, "exports in flight per blow")
	flag.Uint64Var(&cfg.Seed, "seed", uint64(time.Now().UnixNano()), "random seed (sizes, contents, victims, moments)")
	flag.BoolVar(&cfg.Keep, "keep", false, "keep the temp dir (logs, AOF); it is kept anyway when something is bad")
	flag.IntVar(&cfg.Cancels, "cancels", cfg.Cancels, "exports cancelled around each blow")
	var maxSize, rate cliutil.Bytes = cliutil.Bytes(cfg.MaxSize), cliutil.Bytes(cfg.Rate)
	flag.Var(&maxSize, "max-size", "largest source (e.g. 4MiB)")
	flag.Var(&rate, "max-rate", "each worker's --max-rate, bytes per second per export")
	flag.Parse()
	cfg.MaxSize, cfg.Rate = int64(maxSize), int64(rate)
	var of []Kind
	for _, s := range strings.Split(*kindList, ",") {
		k, err := ParseKind(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintln(os.Stderr, "chaos:", err)
			os.Exit(2)
		}
		of = append(of, k)
	}
	if *blows < 1 || cfg.Exports < 1 || cfg.MaxSize < 64<<10 || cfg.Rate < 1 || cfg.Cancels < 0 || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "chaos: want -blows >= 1, -exports >= 1, -max-size >= 64KiB, -max-rate >= 1, -cancels >= 0 and no arguments")
		os.Exit(2)
	}
	cfg.Kinds = RoundRobin(*blows, of)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	sum, err := Run(ctx, cfg)
	sum.Table(os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	if len(sum.Bad()) > 0 {
		os.Exit(1)
	}
}
