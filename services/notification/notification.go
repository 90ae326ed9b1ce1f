// Package notification is the service that sends email and webhooks and keeps the delivery log.
//
// The service runs, serves health, readiness and metrics, and answers its
// gRPC API; methods that are not built yet answer with codes.Unimplemented.
package notification

import (
	"context"

	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/service"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
)

// Config is notification's configuration, read from the environment.
type Config struct {
	// Config is the header every service shares: PARLEY_LOG_LEVEL,
	// PARLEY_NATS_*, PARLEY_POSTGRES_*, PARLEY_NOTIFICATION_GRPC_ADDR,
	// PARLEY_NOTIFICATION_ADMIN_ADDR, ... (libs/service).
	service.Config
}

// Run serves notification until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	b, err := service.Start(ctx, service.Options{
		Name: "notification", Config: cfg.Config, Scopes: Scopes(),
	})
	if err != nil {
		return err
	}
	notificationv1.RegisterNotificationServiceServer(b.GRPC, server{})
	return b.Run(ctx)
}

// server answers every method with Unimplemented until it is built.
type server struct {
	notificationv1.UnimplementedNotificationServiceServer
}

// Scopes lists the API-key scope each method needs: reads need "read",
// everything else "admin".
func Scopes() map[string]string {
	return grpcx.MethodScopes(notificationv1.NotificationService_ServiceDesc, grpcx.ScopeAdmin, map[string]string{"ListSubscriptions": grpcx.ScopeRead, "ListDeliveries": grpcx.ScopeRead})
}
