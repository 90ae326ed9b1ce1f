// Package reporting is the service that projects the event log into
// ClickHouse and answers the Conversations screens' queries over gRPC.
package reporting

import (
	"context"
	"fmt"
	"github.com/parley-dev/parley/libs/leader"
	"github.com/parley-dev/parley/libs/pgstore"
	"maps"
	"os"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/httpgw"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/service"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/api"
	"github.com/parley-dev/parley/services/reporting/internal/export"
	"github.com/parley-dev/parley/services/reporting/internal/prices"
	"github.com/parley-dev/parley/services/reporting/internal/projector"
	"github.com/parley-dev/parley/services/reporting/internal/query"
	"github.com/parley-dev/parley/services/reporting/internal/rebuild"
	"github.com/parley-dev/parley/services/reporting/internal/schema"
	"github.com/parley-dev/parley/services/reporting/internal/share"
	"github.com/parley-dev/parley/services/reporting/internal/sharelinks"
	"github.com/parley-dev/parley/services/reporting/internal/statestore"
)

// Config is reporting's configuration, read from the environment.
type Config struct {
	// Config is the header every service shares: PARLEY_LOG_LEVEL,
	// PARLEY_NATS_*, PARLEY_POSTGRES_*, PARLEY_REPORTING_GRPC_ADDR,
	// PARLEY_REPORTING_ADMIN_ADDR, ... (libs/service).
	service.Config
	ClickHouse config.ClickHouse
	// Export configures export files and links (PARLEY_EXPORT_*).
	Export ExportConfig
	// ProjectorBatch is the most events written to ClickHouse per insert.
	ProjectorBatch int `env:"PARLEY_REPORTING_PROJECTOR_BATCH" envDefault:"5000"`
	// ProjectorPerPartition switches off rounds: the projector then writes
	// each partition's events on their own (one insert per table and one
	// PostgreSQL transaction per partition) instead of those of all its
	// partitions read in a round together.
	ProjectorPerPartition bool `env:"PARLEY_REPORTING_PROJECTOR_PER_PARTITION" envDefault:"false"`
	// ProjectorMaxWait is how long the projector waits to fill a batch.
	ProjectorMaxWait time.Duration `env:"PARLEY_REPORTING_PROJECTOR_MAX_WAIT" envDefault:"200ms"`
	// QueryTimeout bounds each ClickHouse query.
	QueryTimeout time.Duration `env:"PARLEY_REPORTING_QUERY_TIMEOUT" envDefault:"10s"`
	// HTTPAddr serves the HTTP/JSON API (grpc-gateway), share links included.
	HTTPAddr string `env:"PARLEY_REPORTING_HTTP_ADDR" envDefault:":7304"`
	// CORSOrigins are browser origins allowed to call the HTTP API, comma
	// separated; "*" allows any.
	CORSOrigins []string `env:"PARLEY_REPORTING_CORS_ORIGINS" envDefault:""`
	// ShareBaseURL is the public base URL of reporting's HTTP API, used in
	// share links (<base>/v1/shared/<token>).
	ShareBaseURL string `env:"PARLEY_REPORTING_SHARE_BASE_URL" envDefault:"http://127.0.0.1:7304"`
	// ShareTTL is how long a share link stays valid.
	ShareTTL time.Duration `env:"PARLEY_REPORTING_SHARE_TTL" envDefault:"168h"`
	// ShareSecret signs share links (at least 32 bytes). Empty: a random
	// secret kept in PostgreSQL, shared by all replicas.
	ShareSecret string `env:"PARLEY_REPORTING_SHARE_SECRET" envDefault:""`
	// ConsoleBaseURL is the console's base URL; the sessions report links
	// each conversation as <base>/conversations/<id> (empty: no links).
	ConsoleBaseURL string `env:"PARLEY_REPORTING_CONSOLE_BASE_URL" envDefault:""`
	// FreshnessMaxWait bounds how long a request's min_sequence waits for
	// the projection (the request's deadline bounds it too).
	FreshnessMaxWait time.Duration `env:"PARLEY_REPORTING_FRESHNESS_MAX_WAIT" envDefault:"10s"`
	// Partitions is the number of partitions the log is divided into among
	// the projector's replicas; fixed per deployment.
	Partitions int `env:"PARLEY_PARTITIONS" envDefault:"16"`
	// LeaseTTL is how long a replica's partition leases live without a
	// heartbeat: a dead replica's partitions move within about this long.
	LeaseTTL time.Duration `env:"PARLEY_PARTITION_LEASE_TTL" envDefault:"5s"`
	// Member names this replica among the projector's members (default:
	// host name and a random suffix).
	Member string `env:"PARLEY_PARTITION_MEMBER"`
	// Wrap, when set, wraps the projector's handler (fault injection in
	// tests).
	Wrap func(partition.Handler) partition.Handler `env:"-"`
	// KeepLeases, when set, stops without releasing the partition leases,
	// as a crashed replica does (tests).
	KeepLeases bool `env:"-"`
	// Authenticator overrides API-key authentication (tests; nil: the
	// tenancy store).
	Authenticator grpcx.Authenticator `env:"-"`
}

// httpRoutes are the HTTP API's route templates (proto/http.yaml), which
// name its spans: share tokens in paths stay out of traces.
func httpRoutes() []string {
	return []string{
		"/v1/conversations:search", "/v1/conversations/{conversation_id}", "/v1/shared/{share_token}",
		"/v1/dashboard", "/v1/reports/{kind}", "/v1/share-links", "/v1/share-links/{link_id}:revoke", "/v1/settings",
		"/v1/exports", "/v1/exports/{export_id}", "/v1/exports/{export_id}:cancel", export.DownloadPath + "{token}",
	}
}

func (c *Config) defaults() {
	if c.Partitions <= 0 {
		c.Partitions = partition.DefaultPartitions
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = partition.DefaultLeaseTTL
	}
	if c.Member == "" {
		host, _ := os.Hostname()
		c.Member = host + "-" + eventbus.NewEventID()
	}
}

// Run serves reporting until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	b, err := service.Start(ctx, service.Options{
		Name: "reporting", Config: cfg.Config, Scopes: scopes(), Authenticator: cfg.Authenticator,
		// Listing prices needs admin but changes nothing: not audited.
		Mutating: map[string]bool{reportingv1.ReportingService_ListModelPrices_FullMethodName: false},
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
	// ClickHouse has no migration lock of its own: replicas starting
	// together take turns (a PostgreSQL advisory lock).
	if err := pgstore.WithLock(ctx, b.PG, leader.Key("reporting clickhouse migrations"), func(ctx context.Context) error {
		return schema.Migrate(ctx, ch, b.Log)
	}); err != nil {
		b.Close()
		return err
	}
	b.AddCheck("clickhouse", ch.Ping)
	// Queries run as the read-only user when one is configured.
	qch, err := chstore.OpenQuery(ctx, cfg.ClickHouse)
	if err != nil {
		b.Close()
		return err
	}
	b.OnClose(func() { _ = qch.Close() })
	if err := statestore.Migrate(ctx, b.PG, b.Log); err != nil {
		b.Close()
		return err
	}
	if err := sharelinks.Migrate(ctx, b.PG, b.Log); err != nil {
		b.Close()
		return err
	}
	if err := partition.Migrate(ctx, b.PG); err != nil {
		b.Close()
		return err
	}
	states := statestore.New(b.PG)
	secret := []byte(cfg.ShareSecret)
	if len(secret) == 0 {
		if secret, err = states.Secret(ctx, "share-link"); err != nil {
			b.Close()
			return err
		}
	}
	signer, err := share.NewSigner(secret)
	if err != nil {
		b.Close()
		return fmt.Errorf("PARLEY_REPORTING_SHARE_SECRET: %w", err)
	}
	reader := query.NewReader(qch, cfg.QueryTimeout)
	wm := &api.Watermark{Positions: b.PG, Log: b.Bus, Consumer: projector.Durable, Partitions: cfg.Partitions,
		MaxWait: cfg.FreshnessMaxWait, Logger: b.Log}
	ex, err := startExports(ctx, b, cfg, reader, states, wm)
	if err != nil {
		b.Close()
		return err
	}
	srv := api.New(api.Deps{
		Reader: reader, TimeZones: b.Tenancy, Signer: signer, Links: sharelinks.New(b.PG), Prices: prices.New(b.PG),
		ShareBaseURL: cfg.ShareBaseURL, ShareTTL: cfg.ShareTTL, Log: b.Log, Now: time.Now,
		Watermark: wm,
		Bots:      b.Tenancy, ConsoleBaseURL: cfg.ConsoleBaseURL,
	})
	reportingv1.RegisterReportingServiceServer(b.GRPC, srv)
	reportingv1.RegisterSettingsServiceServer(b.GRPC, api.NewSettings(b.Tenancy, b.Log))
	reportingv1.RegisterExportServiceServer(b.GRPC, ex.svc)
	gw, err := httpgw.New(httpgw.Config{Name: "reporting-http", GRPCAddr: b.GRPCAddr(), CORSOrigins: cfg.CORSOrigins, Routes: httpRoutes(),
		MaxBodyBytes: 1 << 20, TracerProvider: b.Tel.TracerProvider, Propagator: b.Tel.Propagator})
	if err != nil {
		b.Close()
		return err
	}
	b.OnClose(func() { _ = gw.Close() })
	if err := reportingv1.RegisterReportingServiceHandler(ctx, gw.GW, gw.Conn); err != nil {
		b.Close()
		return fmt.Errorf("reporting: http gateway: %w", err)
	}
	if err := reportingv1.RegisterSettingsServiceHandler(ctx, gw.GW, gw.Conn); err != nil {
		b.Close()
		return fmt.Errorf("reporting: http gateway: %w", err)
	}
	if err := reportingv1.RegisterExportServiceHandler(ctx, gw.GW, gw.Conn); err != nil {
		b.Close()
		return fmt.Errorf("reporting: http gateway: %w", err)
	}
	gw.Mux.Handle("GET "+export.DownloadPath+"{token}", ex.downloads)
	gw.Mux.Handle("POST /v1/reports/{kind}", &export.SyncCSV{Client: reportingv1.NewReportingServiceClient(gw.Conn), Next: gw.GW})
	proj := projector.New(ch, states, projector.LiveTables, b.Log)
	handle, round := partition.Handlers(proj.HandlePartition, proj.HandleRound, cfg.ProjectorPerPartition, cfg.Wrap)
	pc := partition.NewConsumer(partition.Config{
		Bus: b.Bus, Pool: b.PG, BatchSize: cfg.ProjectorBatch, MaxWait: cfg.ProjectorMaxWait, Log: b.Log, Meter: b.Tel.Meter("github.com/parley-dev/parley/libs/partition"),
		Coordinator: partition.NewCoordinator(b.PG, projector.Durable, cfg.Member, cfg.Partitions, cfg.LeaseTTL),
		Round:       round,
	})
	// Not ready while the projector is paused (ClickHouse, PostgreSQL or
	// the event log unreachable).
	b.AddCheck("projector", pc.Ready)
	srv.SetRebuilder(&rebuild.Rebuilder{CH: ch, PG: b.PG, Bus: b.Bus, States: states, Batch: cfg.ProjectorBatch, Log: b.Log})
	return b.Run(ctx, func(ctx context.Context) error {
		return httpgw.Serve(ctx, cfg.HTTPAddr, gw.Handler(), b.Log, cfg.Server.HTTP)
	}, ex.runner.Run, func(ctx context.Context) error {
		// Every replica projects the partitions it holds a lease on and
		// answers queries.
		removeDurable(ctx, b)
		err := pc.Run(ctx, handle)
		if !cfg.KeepLeases {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if lerr := pc.Leave(dctx); lerr != nil {
				b.Log.WarnContext(dctx, "partition leases not released; they move after their TTL", "err", lerr)
			}
		}
		return err
	})
}

// scopes are the scopes of every method reporting serves.
func scopes() map[string]string {
	m := api.Scopes()
	maps.Copy(m, api.SettingsScopes())
	maps.Copy(m, export.Scopes())
	return m
}

// removeDurable deletes the durable JetStream consumer of earlier versions,
// which read the log with acks; positions now live in PostgreSQL.
func removeDurable(ctx context.Context, b *service.Base) {
	if err := b.Bus.DeleteConsumer(ctx, projector.Durable); err != nil {
		b.Log.WarnContext(ctx, "could not remove the old durable consumer", "err", err)
	}
}
