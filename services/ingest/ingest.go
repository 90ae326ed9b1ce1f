// Package ingest is the service that accepts conversation facts from bot
// runtimes, widgets and Rasa assistants, validates and authenticates them,
// and appends them to the event log (stream PARLEY_CONV).
package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"time"

	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/httpgw"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/tenancy"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest/internal/api"
	"github.com/parley-dev/parley/services/ingest/internal/enrich"
	"github.com/parley-dev/parley/services/ingest/internal/httpapi"
	"github.com/parley-dev/parley/services/ingest/internal/mask"
	"github.com/parley-dev/parley/services/ingest/internal/validate"
)

// Config is ingest's configuration, read from the environment.
type Config struct {
	// Config is the header every service shares: PARLEY_LOG_LEVEL,
	// PARLEY_NATS_*, PARLEY_POSTGRES_*, PARLEY_INGEST_GRPC_ADDR,
	// PARLEY_INGEST_ADMIN_ADDR, ... (libs/service).
	service.Config
	// HTTPAddr serves HTTP/JSON (grpc-gateway) and the Rasa endpoint.
	HTTPAddr string `env:"PARLEY_INGEST_HTTP_ADDR" envDefault:":7301"`
	// MaxBatch is the most events in one Append request.
	MaxBatch int `env:"PARLEY_INGEST_MAX_BATCH" envDefault:"1000"`
	// MaxTextBytes is the longest message text accepted.
	MaxTextBytes int `env:"PARLEY_INGEST_MAX_TEXT_BYTES" envDefault:"16384"`
	// MaxRequestBytes bounds one request (a gRPC message or an HTTP body).
	MaxRequestBytes int `env:"PARLEY_INGEST_MAX_REQUEST_BYTES" envDefault:"4194304"`
	// MaxStreamEvents and MaxStreamRequests bound one AppendStream call
	// (its results are kept until the client closes the stream).
	MaxStreamEvents   int `env:"PARLEY_INGEST_MAX_STREAM_EVENTS" envDefault:"100000"`
	MaxStreamRequests int `env:"PARLEY_INGEST_MAX_STREAM_REQUESTS" envDefault:"10000"`
	// MaxFutureSkew is how far ahead of the server clock occurred_at may be.
	MaxFutureSkew time.Duration `env:"PARLEY_INGEST_MAX_FUTURE_SKEW" envDefault:"5m"`
	// CommitMode is "atomic" (group commit into JetStream atomic batches; for
	// servers that sync before acknowledging) or "pipelined" (one publish
	// per event, pipelined; faster when JetStream acknowledges before
	// syncing).
	CommitMode string `env:"PARLEY_INGEST_COMMIT_MODE" envDefault:"atomic"`
	// CommitMaxEvents is the most events in one atomic batch (≤ 1000).
	CommitMaxEvents int `env:"PARLEY_INGEST_COMMIT_MAX_EVENTS" envDefault:"1000"`
	// CommitMaxInFlight is how many atomic batches may await their commit.
	CommitMaxInFlight int `env:"PARLEY_INGEST_COMMIT_MAX_IN_FLIGHT" envDefault:"2"`
	// CommitLinger is how long a batch waits for company while another is
	// in flight.
	CommitLinger time.Duration `env:"PARLEY_INGEST_COMMIT_LINGER" envDefault:"1ms"`
	// TenantRate limits each tenant to this many events per second (0: no
	// limit); TenantBurst is the bucket size (default: one second's worth).
	TenantRate  float64 `env:"PARLEY_INGEST_TENANT_RATE" envDefault:"0"`
	TenantBurst int     `env:"PARLEY_INGEST_TENANT_BURST" envDefault:"0"`
	// TenantRateOverrides sets limits per tenant: "acme=500:1000,beta=50".
	TenantRateOverrides string `env:"PARLEY_INGEST_TENANT_RATE_OVERRIDES" envDefault:""`
	// CORSOrigins are the browser origins (widgets) allowed to call the HTTP
	// API, comma-separated; "*" allows any.
	CORSOrigins []string `env:"PARLEY_INGEST_CORS_ORIGINS" envDefault:""`
	// TrustedProxies are the proxies (CIDRs or addresses) in front of
	// ingest whose X-Forwarded-For hops are believed; empty: the visitor's
	// IP is the TCP peer.
	TrustedProxies []string `env:"PARLEY_INGEST_TRUSTED_PROXIES" envDefault:""`
	// ClientIPKeys are API key ids whose gRPC callers may set the visitor
	// metadata (parley-client-ip, parley-client-user-agent) themselves.
	ClientIPKeys []string `env:"PARLEY_INGEST_CLIENT_IP_KEYS" envDefault:""`
	// TokenSecret keys the per-conversation tokens of publishable (widget)
	// keys; empty: publishable keys are refused.
	TokenSecret string `env:"PARLEY_INGEST_TOKEN_SECRET" envDefault:""`
	// GeoIPDB is a MaxMind-format City database (GeoLite2-City.mmdb, DB-IP
	// City Lite) for locating visitors; empty: no location lookup.
	GeoIPDB string `env:"PARLEY_INGEST_GEOIP_DB" envDefault:""`
	// PIISecret keys the per-tenant HMACs of anonymous display names and of
	// the masking rules' hash action; empty: legacy unkeyed display names
	// and hash keys anyone could recompute (a warning is logged).
	PIISecret string `env:"PARLEY_INGEST_PII_SECRET" envDefault:""`
	// MaskingCacheTTL is how long a replica uses a tenant's masking rules
	// before reading them again (changes through another replica take
	// effect within it); MaskingCacheTenants bounds the cache.
	MaskingCacheTTL     time.Duration `env:"PARLEY_INGEST_MASKING_CACHE_TTL" envDefault:"30s"`
	MaskingCacheTenants int           `env:"PARLEY_INGEST_MASKING_CACHE_TENANTS" envDefault:"10000"`
	// Auth, when set, wraps the tenancy store's key authentication (tests).
	Auth func(*tenancy.Store) grpcx.Authenticator `env:"-"`
}

// Run serves ingest until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	mode, err := eventbus.ParseCommitMode(cfg.CommitMode)
	if err != nil {
		return err
	}
	overrides, err := api.ParseLimits(cfg.TenantRateOverrides)
	if err != nil {
		return fmt.Errorf("PARLEY_INGEST_TENANT_RATE_OVERRIDES: %w", err)
	}
	if cfg.MaxBatch > eventbus.MaxAtomicBatch && mode == eventbus.CommitAtomic {
		return fmt.Errorf("PARLEY_INGEST_MAX_BATCH %d: at most %d in atomic commit mode", cfg.MaxBatch, eventbus.MaxAtomicBatch)
	}
	trusted, err := enrich.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return fmt.Errorf("PARLEY_INGEST_TRUSTED_PROXIES: %w", err)
	}
	ipKeys := map[string]bool{}
	for _, k := range cfg.ClientIPKeys {
		if k = strings.TrimSpace(k); k != "" {
			ipKeys[k] = true
		}
	}
	signer := api.NewEdgeSigner()
	var locator enrich.Locator = enrich.NoLocator{}
	if cfg.GeoIPDB != "" {
		g, err := enrich.OpenGeoIP(cfg.GeoIPDB)
		if err != nil {
			return fmt.Errorf("PARLEY_INGEST_GEOIP_DB: %w", err)
		}
		defer g.Close()
		locator = g
	}
	maxPayload, err := natsMaxPayload(cfg.NATS.URL)
	if err != nil {
		return err
	}
	log := slog.Default()
	if cfg.Telemetry != nil {
		log = cfg.Telemetry.Logger
	}
	cfg.MaxRequestBytes = clampRequestBytes(cfg.MaxRequestBytes, maxPayload, log)
	scopes := api.Scopes()
	maps.Copy(scopes, api.MaskingScopes())
	b, err := service.Start(ctx, service.Options{
		Name: "ingest", Config: cfg.Config, Scopes: scopes, Mutating: api.MaskingReads(),
		MaxRecvMsgSize:   cfg.MaxRequestBytes,
		WrapAuth:         cfg.Auth,
		PostgresOptional: true, // only API keys need it; they outlive an outage (PARLEY_AUTH_OUTAGE_GRACE)
	})
	if err != nil {
		return err
	}
	if cfg.TokenSecret == "" {
		b.Log.Warn("PARLEY_INGEST_TOKEN_SECRET is empty: calls with publishable (widget) keys are refused")
	}
	if cfg.PIISecret == "" {
		b.Log.Warn("PARLEY_INGEST_PII_SECRET is empty: display names are unkeyed and the masking hash action is recomputable")
	}
	ttl := cfg.MaskingCacheTTL
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	masking := mask.NewCache(api.MaskSource{Store: b.Tenancy}, []byte(cfg.PIISecret), ttl, cfg.MaskingCacheTenants, time.Now)
	ingestv1.RegisterMaskingServiceServer(b.GRPC, api.NewMaskingServer(b.Tenancy, masking, recentMessages{bus: b.Bus}, b.Log))
	view, err := watchEnded(ctx, b)
	if err != nil {
		b.Close()
		return err
	}
	b.AddCheck("ended-view", view.Ready)
	committer := eventbus.NewGroupCommitter(b.Bus, eventbus.GroupCommitOptions{
		Mode: mode, MaxEvents: cfg.CommitMaxEvents, MaxInFlight: cfg.CommitMaxInFlight, Linger: cfg.CommitLinger,
	})
	b.OnClose(committer.Close)
	limits := validate.Limits{MaxBatch: cfg.MaxBatch, MaxTextBytes: cfg.MaxTextBytes, MaxFutureSkew: cfg.MaxFutureSkew,
		MaxStreamEvents: cfg.MaxStreamEvents, MaxStreamRequests: cfg.MaxStreamRequests}
	ingestv1.RegisterIngestServiceServer(b.GRPC, api.New(api.Deps{
		Committer:       committer,
		Ended:           view,
		Closes:          closeLog{bus: b.Bus},
		Starts:          startLog{bus: b.Bus},
		Tokens:          api.NewTokens(cfg.TokenSecret),
		Edge:            signer,
		ClientIPKeys:    ipKeys,
		DuplicateWindow: b.Bus.DuplicateWindow(),
		Enricher:        enrich.New(locator).WithNameSecret([]byte(cfg.PIISecret)),
		Masking:         masking,
		Limiter:         api.NewRateLimiter(api.Limit{Rate: cfg.TenantRate, Burst: cfg.TenantBurst}, overrides),
		Limits:          limits,
		Log:             b.Log,
		Now:             time.Now,
	}))
	edge, err := httpapi.New(ctx, httpapi.Config{
		GRPCAddr: b.GRPCAddr(), CORSOrigins: cfg.CORSOrigins, TrustedProxies: trusted, Signer: signer,
		MaxBodyBytes: int64(cfg.MaxRequestBytes), Auth: b.Auth, Log: b.Log,
		TracerProvider: b.Tel.TracerProvider, Propagator: b.Tel.Propagator,
	})
	if err != nil {
		b.Close()
		return err
	}
	b.OnClose(func() { _ = edge.Close() })
	return b.Run(ctx, func(ctx context.Context) error { return httpgw.Serve(ctx, cfg.HTTPAddr, edge, b.Log, cfg.Server.HTTP) })
}

// watchEnded opens lifecycle's ended-conversations view (creating the bucket
// when lifecycle has not yet) and copies it into memory.
func watchEnded(ctx context.Context, b *service.Base) (*convview.Reader, error) {
	kv, ttl, err := convview.Open(ctx, b.Bus)
	if err != nil {
		return nil, fmt.Errorf("ingest: ended view: %w", err)
	}
	return convview.Watch(ctx, kv, ttl, b.Log)
}

// closeLog finds a conversation's stored close in PARLEY_CONV.
type closeLog struct{ bus *eventbus.Bus }

// LastClose implements api.CloseLog.
func (c closeLog) LastClose(ctx context.Context, tenantID, conversationID string) (string, time.Time, bool, error) {
	m, found, err := c.bus.LastOnSubject(ctx, eventbus.ConvSubject(tenantID, conversationID, "conversation_closed"))
	if err != nil || !found {
		return "", time.Time{}, false, err
	}
	return m.EventID(tenantID), m.Time, true, nil
}
