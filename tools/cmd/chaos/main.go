// Command chaos runs loadgen traffic against the whole stack while killing
// its parts, then verifies that nothing acknowledged was lost or
// duplicated and every projection is right (see tools/chaos). Run it with
// `make chaos`; it exits 1 on any problem.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/parley-dev/parley/tools/chaos"
)

func main() {
	chaos.MaybeRunner()
	var o chaos.Options
	root, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	flag.StringVar(&o.Dir, "dir", filepath.Join(root, ".parley-chaos"), "directory for the stack's data and logs, the binaries and the ack log (emptied first)")
	flag.StringVar(&o.BinDir, "bin-dir", "", "prebuilt service binaries (default: built into --dir/bin)")
	flag.IntVar(&o.Conversations, "conversations", 15_000, "conversations loadgen sends")
	flag.Float64Var(&o.Rate, "rate", 600, "loadgen's events per second")
	flag.IntVar(&o.Concurrency, "concurrency", 8, "loadgen's concurrent senders")
	flag.IntVar(&o.Kills, "kills", 3, "how often each service is killed with SIGKILL")
	flag.DurationVar(&o.KillEvery, "kill-every", 10*time.Second, "pause after each kill")
	flag.DurationVar(&o.ClickHouseOutage, "clickhouse-outage", 120*time.Second, "how long ClickHouse is down")
	flag.DurationVar(&o.PostgresOutage, "postgres-outage", 60*time.Second, "how long PostgreSQL is down")
	flag.IntVar(&o.StackCrashes, "stack-crashes", 1, "how often the whole stack is killed with SIGKILL and started again on the same data")
	flag.DurationVar(&o.Settle, "settle", 10*time.Minute, "longest wait for the projections to catch up before verify judges them")
	flag.DurationVar(&o.Stable, "stable", 60*time.Second, "verify stops waiting once no count has changed for this long")
	flag.IntVar(&o.Replicas, "replicas", 1, "replicas of every service; each kill takes down one replica (the next one each round)")
	flag.BoolVar(&o.LazySync, "lazy-sync", false, "run JetStream with its lazy flush instead of syncing before every acknowledgement")
	flag.Parse()
	o.Root, o.Log, o.Out = root, os.Stderr, os.Stdout
	if err := os.RemoveAll(o.Dir); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := chaos.Run(ctx, o)
	if rep != nil {
		for _, f := range rep.Failures {
			fmt.Println("FAILURE:", f)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	if !rep.OK() {
		fmt.Println("chaos: problems found (see above)")
		os.Exit(1)
	}
	fmt.Println("chaos: OK")
}
