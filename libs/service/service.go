// Package service wires the parts every Parley service has: telemetry, the
// event bus, PostgreSQL with the tenancy schema, the gRPC server with API-key
// auth, and the admin server; and runs them with graceful shutdown.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/natsauth"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/telemetry"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"
)

// Options describe one service process.
type Options struct {
	// Name is the service name: ingest, lifecycle, tagging, reporting or notification.
	Name    string
	Version string
	// Config is the service's configuration header; empty listen addresses
	// take the service's defaults (DefaultListen). Its Telemetry, when
	// set, is used instead of building one (tests, the local stack's
	// shared log output).
	Config
	// Scopes maps each gRPC method to the API-key scope it needs.
	Scopes map[string]string
	// MaxRecvMsgSize bounds one gRPC request message in bytes (grpc-go's
	// default, 4 MiB, when 0).
	MaxRecvMsgSize int
	// Auth and Audit tune API-key authentication and the audit log; nil:
	// read from the environment (PARLEY_AUTH_*, PARLEY_AUDIT_*).
	Auth  *tenancy.AuthConfig
	Audit *tenancy.AuditConfig
	// Mutating overrides, by full method name, whether calls are audited
	// (by default every method not needing the read scope is).
	Mutating map[string]bool
	// PostgresOptional leaves PostgreSQL out of readiness, for a service
	// that needs it only to check API keys (ingest): through an outage,
	// keys verified within PARLEY_AUTH_OUTAGE_GRACE keep working and the
	// service should keep receiving traffic.
	PostgresOptional bool
	// Authenticator, when set, authenticates API keys instead of the
	// tenancy store (tests that need principals tenancy cannot issue).
	Authenticator grpcx.Authenticator
	// WrapAuth, when set, wraps the tenancy store's key authentication
	// (tests give keys properties the store does not hold).
	WrapAuth func(*tenancy.Store) grpcx.Authenticator
}

// Base is a started service's shared parts.
type Base struct {
	Name    string
	Tel     *telemetry.Telemetry
	Log     *slog.Logger
	Bus     *eventbus.Bus
	PG      *pgxpool.Pool
	Tenancy *tenancy.Store
	// Audit writes the audit log of mutating calls.
	Audit *tenancy.AuditWriter
	// Auth authenticates API keys (the tenancy store unless
	// Options.Authenticator or Options.WrapAuth).
	Auth    grpcx.Authenticator
	GRPC    *grpcx.Server
	opts    Options
	checks  []grpcx.Check
	closers []func()
}

// Start connects to NATS and PostgreSQL, ensures the streams and the tenancy
// schema, and builds the gRPC server. Register services on b.GRPC, then call
// Run.
func Start(ctx context.Context, o Options) (_ *Base, err error) {
	o.Config.defaults(o.Name)
	b := &Base{Name: o.Name, opts: o}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	b.Tel = o.Telemetry
	if b.Tel == nil {
		if b.Tel, err = telemetry.New(ctx, telemetry.Config{Service: o.Name, Version: o.Version, LogLevel: o.Server.LogLevel}); err != nil {
			return nil, err
		}
		tel := b.Tel
		b.closers = append(b.closers, func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = tel.Shutdown(sctx)
		})
	}
	b.Log = b.Tel.Logger

	if b.PG, err = pgstore.Connect(ctx, o.Postgres); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, b.PG.Close)
	if err = tenancy.Migrate(ctx, b.PG, b.Log); err != nil {
		return nil, err
	}
	auth, err := envOr(o.Auth)
	if err != nil {
		return nil, err
	}
	audit, err := envOr(o.Audit)
	if err != nil {
		return nil, err
	}
	b.Tenancy = tenancy.NewStoreWith(b.PG, tenancy.Options{Auth: auth, Log: b.Log})
	b.Audit = tenancy.NewAuditWriter(b.PG, audit, b.Log)
	b.closers = append(b.closers, b.Audit.Close) // runs before the pool closes
	_ = b.Tel.Registry.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "parley_audit_dropped_total", Help: "Audit records dropped because the audit queue was full.",
	}, func() float64 { return float64(b.Audit.Dropped()) }))

	natsOpts, err := natsauth.ClientOptions(o.Name, o.NATS)
	if err != nil {
		return nil, err
	}
	if b.Bus, err = eventbus.Connect(ctx, o.NATS.URL, "parley-"+o.Name, eventbus.Options{
		Producer:        o.Name,
		Replicas:        o.NATS.Replicas,
		DuplicateWindow: o.NATS.DuplicateWindow,
		Logger:          b.Log,
		TracerProvider:  b.Tel.TracerProvider,
		Propagator:      b.Tel.Propagator,
	}, natsOpts...); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, func() { _ = b.Bus.Close() })
	if o.NATS.WaitForStreams {
		err = natsauth.WaitForStreams(ctx, b.Bus.JetStream(), b.Log, eventbus.ConvStream, eventbus.DLQStream)
	} else {
		err = b.Bus.EnsureStreams(ctx)
	}
	if err != nil {
		return nil, err
	}

	b.Auth = grpcx.Authenticator(b.Tenancy)
	switch {
	case o.Authenticator != nil:
		b.Auth = o.Authenticator
	case o.WrapAuth != nil:
		b.Auth = o.WrapAuth(b.Tenancy)
	}
	if b.GRPC, err = grpcx.NewServer(grpcx.ServerConfig{
		Telemetry: b.Tel, Auth: b.Auth, Scopes: o.Scopes, MaxRecvMsgSize: o.MaxRecvMsgSize, Audit: b.Audit, Mutating: o.Mutating,
		Limits: o.Server.GRPC,
	}); err != nil {
		return nil, err
	}
	b.AddCheck("nats", b.Bus.Ready)
	if !o.PostgresOptional {
		b.AddCheck("postgres", func(ctx context.Context) error { return b.PG.Ping(ctx) })
	}
	return b, nil
}

// GRPCAddr is the address the gRPC server listens on (the configured one,
// or the service's default).
func (b *Base) GRPCAddr() string { return b.opts.GRPCAddr }

// AddCheck adds a readiness check served on /readyz.
func (b *Base) AddCheck(name string, check func(context.Context) error) {
	b.checks = append(b.checks, grpcx.Check{Name: name, Check: check})
}

// OnClose registers a function run after the service stopped.
func (b *Base) OnClose(f func()) { b.closers = append(b.closers, f) }

// Run serves gRPC and the admin endpoints and runs the workers (consumers,
// sweepers) until ctx is cancelled or one of them fails; then it shuts down
// gracefully: stop taking calls, let workers finish and ack their batch,
// drain NATS, close pools.
func (b *Base) Run(ctx context.Context, workers ...func(context.Context) error) error {
	defer b.close()
	admin := grpcx.NewAdmin(b.Tel.Registry, b.Log, grpcx.AdminOptions{Pprof: b.opts.Server.PprofEnabled, HTTP: b.opts.Server.HTTP}, b.checks...)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return b.GRPC.Serve(gctx, b.opts.GRPCAddr, shutdownTimeout(b.opts.Server)) })
	g.Go(func() error { return admin.Serve(gctx, b.opts.AdminAddr) })
	for _, w := range workers {
		g.Go(func() error { return w(gctx) })
	}
	b.Log.Info("service started", "grpc_addr", b.opts.GRPCAddr, "admin_addr", b.opts.AdminAddr)
	err := g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	if err != nil {
		b.Log.Error("service stopped with error", "err", err)
		return fmt.Errorf("%s: %w", b.Name, err)
	}
	b.Log.Info("service stopped")
	return nil
}

// Close releases what Start opened; for setup failures after Start (Run
// closes on its own).
func (b *Base) Close() { b.close() }

func (b *Base) close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.closers = nil
}

// envOr returns *v, or a T read from the environment when v is nil.
func envOr[T any](v *T) (T, error) {
	if v != nil {
		return *v, nil
	}
	return config.Load[T]()
}

func shutdownTimeout(s config.Server) time.Duration {
	if s.ShutdownTimeout > 0 {
		return s.ShutdownTimeout
	}
	return 20 * time.Second
}
