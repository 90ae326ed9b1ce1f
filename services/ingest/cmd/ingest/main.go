// Command ingest runs Parley's ingest service. Configuration comes from the
// environment (see README.md, "Configuration").
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/services/ingest"
)

func main() {
	cfg, err := config.Load[ingest.Config]()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := ingest.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
