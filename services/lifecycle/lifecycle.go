// Package lifecycle is the service that owns every conversation's state machine: start, end, stale timeout, live-agent takeover and engagement classification.
//
// The service runs, serves health, readiness and metrics, and answers its
// gRPC API; methods that are not built yet answer with codes.Unimplemented.
package lifecycle

import (
	"context"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/telemetry"
	lifecyclev1 "github.com/parley-dev/parley/proto/parley/lifecycle/v1"
)

// Config is lifecycle's configuration, read from the environment.
type Config struct {
	Server   config.Server
	NATS     config.NATS
	Postgres config.Postgres
	// GRPCAddr is where the gRPC API listens.
	GRPCAddr string `env:"PARLEY_LIFECYCLE_GRPC_ADDR" envDefault:":7102"`
	// AdminAddr serves /healthz, /readyz and /metrics.
	AdminAddr string `env:"PARLEY_LIFECYCLE_ADMIN_ADDR" envDefault:":7202"`
	// Telemetry overrides the service's own telemetry (tests, local stack).
	Telemetry *telemetry.Telemetry `env:"-"`
}

// Run serves lifecycle until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	b, err := service.Start(ctx, service.Options{
		Name: "lifecycle", Server: cfg.Server, NATS: cfg.NATS, Postgres: cfg.Postgres,
		GRPCAddr: cfg.GRPCAddr, AdminAddr: cfg.AdminAddr, Scopes: Scopes(), Telemetry: cfg.Telemetry,
	})
	if err != nil {
		return err
	}
	lifecyclev1.RegisterLifecycleServiceServer(b.GRPC, server{})
	return b.Run(ctx)
}

// server answers every method with Unimplemented until it is built.
type server struct {
	lifecyclev1.UnimplementedLifecycleServiceServer
}

// Scopes lists the API-key scope each method needs: reads need "read",
// everything else "admin".
func Scopes() map[string]string {
	return grpcx.MethodScopes(lifecyclev1.LifecycleService_ServiceDesc, grpcx.ScopeAdmin, map[string]string{"GetConversationState": grpcx.ScopeRead, "GetStats": grpcx.ScopeRead})
}
