// Package reporting is the service that projects the event log into
// ClickHouse and answers the Conversations screens' queries over gRPC.
package reporting

import (
	"context"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/telemetry"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/api"
	"github.com/parley-dev/parley/services/reporting/internal/projector"
	"github.com/parley-dev/parley/services/reporting/internal/query"
	"github.com/parley-dev/parley/services/reporting/internal/schema"
	"github.com/parley-dev/parley/services/reporting/internal/statestore"
)

// Config is reporting's configuration, read from the environment.
type Config struct {
	Server     config.Server
	NATS       config.NATS
	Postgres   config.Postgres
	ClickHouse config.ClickHouse
	// GRPCAddr is where the gRPC API listens.
	GRPCAddr string `env:"PARLEY_REPORTING_GRPC_ADDR" envDefault:":7104"`
	// AdminAddr serves /healthz, /readyz and /metrics.
	AdminAddr string `env:"PARLEY_REPORTING_ADMIN_ADDR" envDefault:":7204"`
	// ProjectorBatch is the most events written to ClickHouse per insert.
	ProjectorBatch int `env:"PARLEY_REPORTING_PROJECTOR_BATCH" envDefault:"5000"`
	// ProjectorMaxWait is how long the projector waits to fill a batch.
	ProjectorMaxWait time.Duration `env:"PARLEY_REPORTING_PROJECTOR_MAX_WAIT" envDefault:"200ms"`
	// QueryTimeout bounds each ClickHouse query.
	QueryTimeout time.Duration `env:"PARLEY_REPORTING_QUERY_TIMEOUT" envDefault:"10s"`
	// Telemetry overrides the service's own telemetry (tests, local stack).
	Telemetry *telemetry.Telemetry `env:"-"`
}

// Run serves reporting until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	b, err := service.Start(ctx, service.Options{
		Name: "reporting", Server: cfg.Server, NATS: cfg.NATS, Postgres: cfg.Postgres,
		GRPCAddr: cfg.GRPCAddr, AdminAddr: cfg.AdminAddr, Scopes: api.Scopes(), Telemetry: cfg.Telemetry,
	})
	if err != nil {
		return err
	}
	ch, err := chstore.Open(ctx, cfg.ClickHouse)
	if err != nil {
		b.Close()
		return err
	}
	b.OnClose(func() { _ = ch.Close() })
	if err := schema.Migrate(ctx, ch, b.Log); err != nil {
		b.Close()
		return err
	}
	b.AddCheck("clickhouse", ch.Ping)
	if err := statestore.Migrate(ctx, b.PG, b.Log); err != nil {
		b.Close()
		return err
	}
	reportingv1.RegisterReportingServiceServer(b.GRPC, api.New(query.NewReader(ch, cfg.QueryTimeout), b.Log))
	proj := projector.New(ch, statestore.New(b.PG), b.Log)
	return b.Run(ctx, func(ctx context.Context) error {
		return b.Bus.Consume(ctx, eventbus.ConsumerConfig{
			Durable:   projector.Durable,
			BatchSize: cfg.ProjectorBatch,
			MaxWait:   cfg.ProjectorMaxWait,
		}, proj.Handle)
	})
}
