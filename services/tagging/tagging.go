// Package tagging is the service that tags conversations by rules and built-in issue detectors, and records manual labels and flags.
//
// The service runs, serves health, readiness and metrics, and answers its
// gRPC API; methods that are not built yet answer with codes.Unimplemented.
package tagging

import (
	"context"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/telemetry"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
)

// Config is tagging's configuration, read from the environment.
type Config struct {
	Server   config.Server
	NATS     config.NATS
	Postgres config.Postgres
	// GRPCAddr is where the gRPC API listens.
	GRPCAddr string `env:"PARLEY_TAGGING_GRPC_ADDR" envDefault:":7103"`
	// AdminAddr serves /healthz, /readyz and /metrics.
	AdminAddr string `env:"PARLEY_TAGGING_ADMIN_ADDR" envDefault:":7203"`
	// Telemetry overrides the service's own telemetry (tests, local stack).
	Telemetry *telemetry.Telemetry `env:"-"`
}

// Run serves tagging until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	b, err := service.Start(ctx, service.Options{
		Name: "tagging", Server: cfg.Server, NATS: cfg.NATS, Postgres: cfg.Postgres,
		GRPCAddr: cfg.GRPCAddr, AdminAddr: cfg.AdminAddr, Scopes: Scopes(), Telemetry: cfg.Telemetry,
	})
	if err != nil {
		return err
	}
	taggingv1.RegisterTaggingServiceServer(b.GRPC, server{})
	return b.Run(ctx)
}

// server answers every method with Unimplemented until it is built.
type server struct {
	taggingv1.UnimplementedTaggingServiceServer
}

// Scopes lists the API-key scope each method needs: reads need "read",
// everything else "admin".
func Scopes() map[string]string {
	return grpcx.MethodScopes(taggingv1.TaggingService_ServiceDesc, grpcx.ScopeAdmin, map[string]string{"ListRules": grpcx.ScopeRead, "TestRule": grpcx.ScopeRead})
}
