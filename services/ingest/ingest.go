// Package ingest is the service that accepts conversation facts from bot
// runtimes and widgets, validates and authenticates them, and appends them to
// the event log (stream PARLEY_CONV).
package ingest

import (
	"context"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/telemetry"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest/internal/api"
	"github.com/parley-dev/parley/services/ingest/internal/validate"
)

// Config is ingest's configuration, read from the environment.
type Config struct {
	Server   config.Server
	NATS     config.NATS
	Postgres config.Postgres
	// GRPCAddr is where the gRPC API listens.
	GRPCAddr string `env:"PARLEY_INGEST_GRPC_ADDR" envDefault:":7101"`
	// AdminAddr serves /healthz, /readyz and /metrics.
	AdminAddr string `env:"PARLEY_INGEST_ADMIN_ADDR" envDefault:":7201"`
	// MaxBatch is the most events in one Append request.
	MaxBatch int `env:"PARLEY_INGEST_MAX_BATCH" envDefault:"1000"`
	// MaxTextBytes is the longest message text accepted.
	MaxTextBytes int `env:"PARLEY_INGEST_MAX_TEXT_BYTES" envDefault:"16384"`
	// MaxFutureSkew is how far ahead of the server clock occurred_at may be.
	MaxFutureSkew time.Duration `env:"PARLEY_INGEST_MAX_FUTURE_SKEW" envDefault:"5m"`
	// Telemetry overrides the service's own telemetry (tests, local stack).
	Telemetry *telemetry.Telemetry `env:"-"`
}

// Run serves ingest until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	b, err := service.Start(ctx, service.Options{
		Name: "ingest", Server: cfg.Server, NATS: cfg.NATS, Postgres: cfg.Postgres,
		GRPCAddr: cfg.GRPCAddr, AdminAddr: cfg.AdminAddr, Scopes: api.Scopes(), Telemetry: cfg.Telemetry,
	})
	if err != nil {
		return err
	}
	limits := validate.Limits{MaxBatch: cfg.MaxBatch, MaxTextBytes: cfg.MaxTextBytes, MaxFutureSkew: cfg.MaxFutureSkew}
	ingestv1.RegisterIngestServiceServer(b.GRPC, api.New(b.Bus, limits, b.Log, time.Now))
	return b.Run(ctx)
}
