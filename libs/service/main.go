package service

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/parley-dev/parley/libs/config"
)

// Main is the body of every service's cmd/<name>/main.go: load C from the
// environment, run until SIGINT or SIGTERM, and exit non-zero on failure
// (2 for bad configuration, 1 for a run error).
func Main[C any](run func(context.Context, C) error) {
	cfg, err := config.Load[C]()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		stop()
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
