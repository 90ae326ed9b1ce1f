// Command bench measures the whole suite on this machine and writes
// BENCHMARKS.md (see tools/bench). Run it with `make bench`.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/parley-dev/parley/tools/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	dir := envOr("PARLEY_BENCH_DIR", filepath.Join(root, ".parley-bench"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	phase, err := time.ParseDuration(envOr("PARLEY_BENCH_PHASE", "20s"))
	if err != nil {
		return fmt.Errorf("PARLEY_BENCH_PHASE: %w", err)
	}
	var sizes []int
	for _, s := range strings.Split(envOr("PARLEY_BENCH_SIZES", "100000,1000000"), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("PARLEY_BENCH_SIZES: %q", s)
		}
		sizes = append(sizes, n)
	}
	only, err := bench.ParsePhases(os.Getenv("PARLEY_BENCH_ONLY"))
	if err != nil {
		return fmt.Errorf("PARLEY_BENCH_ONLY: %w", err)
	}
	profDir := os.Getenv("PARLEY_BENCH_PROFILE")
	if profDir != "" {
		if profDir, err = filepath.Abs(profDir); err != nil {
			return err
		}
	}
	rep, err := bench.Run(ctx, bench.Options{Root: root, Dir: dir, Phase: phase, Sizes: sizes, Log: os.Stderr, Only: only, ProfileDir: profDir})
	if err != nil {
		return err
	}
	out := envOr("PARLEY_BENCH_OUT", filepath.Join(root, "BENCHMARKS.md"))
	if len(only) > 0 && os.Getenv("PARLEY_BENCH_OUT") == "" {
		// A partial run does not replace the whole run's figures.
		out = filepath.Join(dir, "BENCHMARKS-partial.md")
	}
	if old, err := os.ReadFile(out); err == nil {
		rep.Kept = bench.KeptSections(string(old))
	} else if old, err := os.ReadFile(filepath.Join(root, "BENCHMARKS.md")); err == nil {
		rep.Kept = bench.KeptSections(string(old))
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := rep.WriteMarkdown(f, "make bench"); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", out)
	return nil
}

func envOr(k, d string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return d
}
