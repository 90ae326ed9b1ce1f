// Package grpcx is the gRPC server kit every Parley service uses: health and
// reflection services, panic recovery, request logging, OpenTelemetry, API-key
// authentication with per-method scopes, and an admin HTTP server with
// /healthz, /readyz and /metrics.
package grpcx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/telemetry"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	Telemetry *telemetry.Telemetry
	// Auth resolves API keys. Required.
	Auth Authenticator
	// Scopes maps full method names ("/pkg.Service/Method") to the scope they
	// need. Methods not listed need the admin scope.
	Scopes map[string]string
	// MaxRecvMsgSize caps request size in bytes (default 4 MiB).
	MaxRecvMsgSize int
	// Audit, when set, records every call of a mutating method (Audited).
	Audit AuditSink
	// Mutating overrides, by full method name, whether a method is audited.
	Mutating map[string]bool
	// Limits bound concurrent streams per connection and keepalive (zero
	// values take config.GRPC's defaults).
	Limits config.GRPC
}

// Server is a gRPC server with Parley's standard services and interceptors.
type Server struct {
	*grpc.Server
	Health *health.Server
	log    *slog.Logger
}

// NewServer builds the server. Register services on it, then call Serve.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Telemetry == nil || cfg.Auth == nil {
		return nil, errors.New("grpcx: telemetry and auth are required")
	}
	if cfg.MaxRecvMsgSize <= 0 {
		cfg.MaxRecvMsgSize = 4 << 20
	}
	log := cfg.Telemetry.Logger
	az := newAuthorizer(cfg, log)
	recoverOpt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", fmt.Sprint(p))
		return status.Error(codes.Internal, "internal error")
	})
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall), logging.WithLevels(codeToLevel)}
	lim := cfg.Limits.WithDefaults()
	srv := grpc.NewServer(
		grpc.MaxConcurrentStreams(lim.MaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             lim.KeepaliveMinTime,
			PermitWithoutStream: lim.KeepalivePermitWithoutStream,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			Time:             lim.KeepaliveTime,
			Timeout:          lim.KeepaliveTimeout,
			MaxConnectionAge: lim.MaxConnectionAge,
		}),
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(cfg.Telemetry.TracerProvider),
			otelgrpc.WithMeterProvider(cfg.Telemetry.MeterProvider),
			otelgrpc.WithPropagators(cfg.Telemetry.Propagator),
		)),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.ChainUnaryInterceptor(
			recovery.UnaryServerInterceptor(recoverOpt),
			logging.UnaryServerInterceptor(slogAdapter(log), logOpts...),
			az.unary,
		),
		grpc.ChainStreamInterceptor(
			recovery.StreamServerInterceptor(recoverOpt),
			logging.StreamServerInterceptor(slogAdapter(log), logOpts...),
			az.stream,
		),
	)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	reflection.Register(srv)
	return &Server{Server: srv, Health: hs, log: log}, nil
}

// Serve listens on addr and serves until ctx is cancelled, then stops
// gracefully: health turns NOT_SERVING, in-flight calls finish (bounded by
// shutdownTimeout), and the listener closes.
func (s *Server) Serve(ctx context.Context, addr string, shutdownTimeout time.Duration) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("grpcx: listen %s: %w", addr, err)
	}
	return s.ServeListener(ctx, lis, shutdownTimeout)
}

// ServeListener is Serve on an existing listener.
func (s *Server) ServeListener(ctx context.Context, lis net.Listener, shutdownTimeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.Server.Serve(lis) }()
	s.log.Info("gRPC server listening", "addr", lis.Addr().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.Health.Shutdown()
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(shutdownTimeout):
		s.Stop()
	}
	return nil
}

func codeToLevel(c codes.Code) logging.Level {
	switch c {
	case codes.OK, codes.Canceled, codes.NotFound, codes.InvalidArgument, codes.AlreadyExists,
		codes.Unauthenticated, codes.PermissionDenied, codes.FailedPrecondition, codes.OutOfRange:
		return logging.LevelInfo
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted, codes.Unimplemented:
		return logging.LevelWarn
	default:
		return logging.LevelError
	}
}

func slogAdapter(l *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		l.Log(ctx, slog.Level(lvl), msg, fields...)
	})
}
