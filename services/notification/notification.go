// Package notification is the service that routes conversation events to
// webhooks and email and keeps the delivery log (docs/webhooks.md).
//
// The partitioned consumer "notification" on PARLEY_CONV (libs/partition)
// folds each event into its conversation's facts, selects the tenant's
// subscriptions by event kind and CEL condition (the tagging rules'
// dialect, libs/rules) and records one delivery per (subscription, event)
// in the transaction that commits its position. Every replica's dispatcher
// claims due deliveries from PostgreSQL and sends them: signed webhooks
// (Standard Webhooks) through an SSRF-guarded client, or email through a
// Mailer; every attempt is logged, failures are retried with backoff.
package notification

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/httpgw"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/rules"
	"github.com/parley-dev/parley/libs/service"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	"github.com/parley-dev/parley/services/notification/internal/alerts"
	"github.com/parley-dev/parley/services/notification/internal/api"
	"github.com/parley-dev/parley/services/notification/internal/consumer"
	"github.com/parley-dev/parley/services/notification/internal/delivery"
	"github.com/parley-dev/parley/services/notification/internal/mail"
	"github.com/parley-dev/parley/services/notification/internal/mailer"
	"github.com/parley-dev/parley/services/notification/internal/store"
	"github.com/parley-dev/parley/services/notification/internal/webhook"
)

// Mailer sends email deliveries (event emails, transcripts, disabled-endpoint
// notices); MailMessage is one email.
type (
	Mailer      = delivery.Mailer
	MailMessage = delivery.MailMessage
)

// Config is notification's configuration, read from the environment.
type Config struct {
	// Config is the header every service shares: PARLEY_LOG_LEVEL,
	// PARLEY_NATS_*, PARLEY_POSTGRES_*, PARLEY_NOTIFICATION_GRPC_ADDR,
	// PARLEY_NOTIFICATION_ADMIN_ADDR, ... (libs/service).
	service.Config
	// HTTPAddr serves the HTTP/JSON API (grpc-gateway).
	HTTPAddr string `env:"PARLEY_NOTIFICATION_HTTP_ADDR" envDefault:":7305"`
	// AllowPrivateTargets lets webhooks reach loopback, private,
	// link-local and metadata addresses (the local stack, demos).
	AllowPrivateTargets bool `env:"PARLEY_NOTIFICATION_ALLOW_PRIVATE_TARGETS" envDefault:"false"`
	// AllowHTTP accepts http:// webhook URLs besides https://.
	AllowHTTP bool `env:"PARLEY_NOTIFICATION_ALLOW_HTTP" envDefault:"false"`
	// RetryFor is how long a delivery is retried before it is failed.
	RetryFor time.Duration `env:"PARLEY_NOTIFICATION_RETRY_FOR" envDefault:"24h"`
	// RetryBase and RetryMax shape the exponential backoff (with jitter).
	RetryBase time.Duration `env:"PARLEY_NOTIFICATION_RETRY_BASE" envDefault:"5s"`
	RetryMax  time.Duration `env:"PARLEY_NOTIFICATION_RETRY_MAX" envDefault:"1h"`
	// DisableAfter disables an endpoint whose every attempt failed for
	// this long.
	DisableAfter time.Duration `env:"PARLEY_NOTIFICATION_DISABLE_AFTER" envDefault:"120h"`
	// AttemptTimeout bounds one webhook call.
	AttemptTimeout time.Duration `env:"PARLEY_NOTIFICATION_ATTEMPT_TIMEOUT" envDefault:"15s"`
	// EndpointConcurrency bounds one subscription's calls in flight per
	// replica; EndpointRate its calls per second.
	EndpointConcurrency int     `env:"PARLEY_NOTIFICATION_ENDPOINT_CONCURRENCY" envDefault:"4"`
	EndpointRate        float64 `env:"PARLEY_NOTIFICATION_ENDPOINT_RATE" envDefault:"50"`
	// Workers bounds calls in flight per replica.
	Workers int `env:"PARLEY_NOTIFICATION_WORKERS" envDefault:"64"`
	// Poll is how often due retries are looked for.
	Poll time.Duration `env:"PARLEY_NOTIFICATION_POLL" envDefault:"1s"`
	// MaxResponseBytes is the most of a webhook response read.
	MaxResponseBytes int64 `env:"PARLEY_NOTIFICATION_MAX_RESPONSE_BYTES" envDefault:"65536"`
	// ConsumerBatch is the most events of one partition applied in one
	// transaction.
	ConsumerBatch int `env:"PARLEY_NOTIFICATION_CONSUMER_BATCH" envDefault:"500"`
	// MaxMessages is how many recent messages a conversation's facts (and
	// so a payload's conversation summary) keep.
	MaxMessages int `env:"PARLEY_NOTIFICATION_MAX_MESSAGES" envDefault:"20"`
	// MaxSubscriptionsPerTenant bounds each tenant's subscriptions (a
	// negative value: no limit).
	MaxSubscriptionsPerTenant int `env:"PARLEY_NOTIFICATION_MAX_SUBSCRIPTIONS_PER_TENANT" envDefault:"100"`
	// LogRetention is how long delivered and failed deliveries and all
	// attempts stay in the delivery log.
	LogRetention time.Duration `env:"PARLEY_NOTIFICATION_LOG_RETENTION" envDefault:"720h"`
	// AlertInterval is how often alert rules are evaluated.
	AlertInterval time.Duration `env:"PARLEY_NOTIFICATION_ALERT_INTERVAL" envDefault:"15s"`
	// MaxAlertRulesPerTenant bounds each tenant's alert rules.
	MaxAlertRulesPerTenant int `env:"PARLEY_NOTIFICATION_MAX_ALERT_RULES_PER_TENANT" envDefault:"50"`
	// AlertStep is the granularity of alert windows (default a minute;
	// tests shorten it).
	AlertStep time.Duration `env:"-"`
	// Partitions, LeaseTTL and Member: see libs/partition
	// (docs/operations.md).
	Partitions int           `env:"PARLEY_PARTITIONS" envDefault:"16"`
	LeaseTTL   time.Duration `env:"PARLEY_PARTITION_LEASE_TTL" envDefault:"5s"`
	Member     string        `env:"PARLEY_PARTITION_MEMBER"`
	// Email turns email on: with it and no Mailer, Run sends email through
	// the SMTP server of SMTP (PARLEY_SMTP_*; internal/mailer).
	Email bool `env:"PARLEY_NOTIFICATION_EMAIL" envDefault:"true"`
	SMTP  mail.Config
	// MaxTranscriptMessages bounds one transcript email (the first ones).
	MaxTranscriptMessages int `env:"PARLEY_NOTIFICATION_MAX_TRANSCRIPT_MESSAGES" envDefault:"1000"`
	// Mailer sends email (tests); nil: the SMTP sender when Email is set,
	// else email subscriptions and SendTranscript answer
	// FailedPrecondition.
	Mailer Mailer `env:"-"`
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.RetryFor, 24*time.Hour)
	def(&c.RetryBase, 5*time.Second)
	def(&c.RetryMax, time.Hour)
	def(&c.DisableAfter, 120*time.Hour)
	def(&c.AttemptTimeout, 15*time.Second)
	def(&c.Poll, time.Second)
	def(&c.LeaseTTL, partition.DefaultLeaseTTL)
	def(&c.LogRetention, 720*time.Hour)
	def(&c.AlertInterval, 15*time.Second)
	def(&c.AlertStep, time.Minute)
	if c.MaxAlertRulesPerTenant <= 0 {
		c.MaxAlertRulesPerTenant = 50
	}
	switch {
	case c.MaxSubscriptionsPerTenant == 0:
		c.MaxSubscriptionsPerTenant = 100
	case c.MaxSubscriptionsPerTenant < 0:
		c.MaxSubscriptionsPerTenant = 0 // no limit
	}
	if c.EndpointConcurrency <= 0 {
		c.EndpointConcurrency = 4
	}
	if c.EndpointRate <= 0 {
		c.EndpointRate = 50
	}
	if c.Workers <= 0 {
		c.Workers = 64
	}
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = 64 << 10
	}
	if c.ConsumerBatch <= 0 {
		c.ConsumerBatch = 500
	}
	if c.MaxMessages <= 0 {
		c.MaxMessages = 20
	}
	if c.Partitions <= 0 {
		c.Partitions = partition.DefaultPartitions
	}
	if c.Member == "" {
		host, _ := os.Hostname()
		c.Member = host + "-" + eventbus.NewEventID()
	}
}

// Run serves notification until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	b, err := service.Start(ctx, service.Options{
		Name: "notification", Config: cfg.Config, Scopes: Scopes(),
	})
	if err != nil {
		return err
	}
	if err := store.Migrate(ctx, b.PG, b.Log); err != nil {
		b.Close()
		return err
	}
	if err := partition.Migrate(ctx, b.PG); err != nil {
		b.Close()
		return err
	}
	engine, err := rules.NewEngine(rules.Options{MaxMessages: cfg.MaxMessages})
	if err != nil {
		b.Close()
		return err
	}
	st := store.New(b.PG)
	if cfg.Mailer == nil && cfg.Email {
		sender, err := mail.NewSender(cfg.SMTP)
		if err != nil {
			b.Close()
			return err
		}
		cfg.Mailer = mailer.New(mailer.Config{Sender: sender, Bus: b.Bus, Store: st, TimeZone: b.Tenancy.TimeZone,
			MaxTranscriptMessages: cfg.MaxTranscriptMessages, Log: b.Log})
	}
	policy := webhook.Policy{AllowPrivate: cfg.AllowPrivateTargets, AllowHTTP: cfg.AllowHTTP}
	disp := delivery.New(delivery.Config{
		Store: st, Client: webhook.NewClient(policy, cfg.AttemptTimeout, cfg.MaxResponseBytes), Mailer: cfg.Mailer, Log: b.Log,
		RetryBase: cfg.RetryBase, RetryMax: cfg.RetryMax, DisableAfter: cfg.DisableAfter, AttemptTimeout: cfg.AttemptTimeout,
		PerEndpoint: cfg.EndpointConcurrency, Rate: cfg.EndpointRate, Workers: cfg.Workers, Poll: cfg.Poll,
		Meter: b.Tel.Meter("github.com/parley-dev/parley/services/notification"),
	})
	folder := &consumer.Folder{Matcher: consumer.NewMatcher(engine, b.Log), Facts: facts.Options{MaxMessages: cfg.MaxMessages},
		RetryFor: cfg.RetryFor, AlertStep: cfg.AlertStep}
	evaluator := &alerts.Evaluator{Store: st, Every: cfg.AlertInterval, RetryFor: cfg.RetryFor, Kick: disp.Kick, Log: b.Log}
	notificationv1.RegisterNotificationServiceServer(b.GRPC, api.New(api.Deps{
		Store: st, Bus: b.Bus, Engine: engine, Folder: folder, Policy: policy, Email: cfg.Mailer != nil,
		RetryFor: cfg.RetryFor, MaxSubscriptions: cfg.MaxSubscriptionsPerTenant, MaxAlertRules: cfg.MaxAlertRulesPerTenant,
		AlertStep: cfg.AlertStep, Kick: disp.Kick, Log: b.Log,
	}))
	gw, err := httpgw.New(httpgw.Config{Name: "notification-http", GRPCAddr: b.GRPCAddr(), Routes: httpRoutes(),
		MaxBodyBytes: 1 << 20, TracerProvider: b.Tel.TracerProvider, Propagator: b.Tel.Propagator})
	if err != nil {
		b.Close()
		return err
	}
	b.OnClose(func() { _ = gw.Close() })
	if err := notificationv1.RegisterNotificationServiceHandler(ctx, gw.GW, gw.Conn); err != nil {
		b.Close()
		return fmt.Errorf("notification: http gateway: %w", err)
	}
	pc := partition.NewConsumer(partition.Config{
		Bus: b.Bus, Pool: b.PG, BatchSize: cfg.ConsumerBatch, Log: b.Log, Meter: b.Tel.Meter("github.com/parley-dev/parley/libs/partition"),
		Coordinator: partition.NewCoordinator(b.PG, consumer.Name, cfg.Member, cfg.Partitions, cfg.LeaseTTL),
	})
	b.AddCheck("consumer", pc.Ready)
	cons := consumer.New(b.PG, folder, disp.Kick)
	return b.Run(ctx, func(ctx context.Context) error {
		return httpgw.Serve(ctx, cfg.HTTPAddr, gw.Handler(), b.Log, cfg.Server.HTTP)
	}, func(ctx context.Context) error {
		err := pc.Run(ctx, cons.Handle)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if lerr := pc.Leave(dctx); lerr != nil {
			b.Log.WarnContext(dctx, "partition leases not released; they move after their TTL", "err", lerr)
		}
		return err
	}, disp.Run, evaluator.Run, func(ctx context.Context) error {
		prune(ctx, b.Log, st, cfg.LogRetention)
		return nil
	})
}

// prune trims the delivery log to its retention, hourly, until ctx ends.
func prune(ctx context.Context, log *slog.Logger, st *store.Store, retention time.Duration) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if err := st.Prune(ctx, time.Now().Add(-retention)); err != nil && ctx.Err() == nil {
			log.WarnContext(ctx, "pruning the delivery log failed; retrying within the hour", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func httpRoutes() []string {
	return []string{
		"/v1/subscriptions", "/v1/subscriptions/{subscription_id}", "/v1/subscriptions/{subscription_id}:pause",
		"/v1/subscriptions/{subscription_id}:resume", "/v1/subscriptions/{subscription_id}:test",
		"/v1/subscriptions/{subscription_id}:rotateSecret", "/v1/subscriptions/{subscription_id}:replay",
		"/v1/subscriptions/{subscription_id}/deliveries", "/v1/subscriptions/{subscription_id}/attempts",
		"/v1/deliveries/{delivery_id}:replay", "/v1/conversations/{conversation_id}:sendTranscript",
		"/v1/alert-rules", "/v1/alert-rules/{alert_id}", "/v1/branding",
	}
}

// Scopes lists the API-key scope each method needs: reads need "read",
// everything else "admin".
func Scopes() map[string]string {
	return grpcx.MethodScopes(notificationv1.NotificationService_ServiceDesc, grpcx.ScopeAdmin, map[string]string{
		"ListSubscriptions": grpcx.ScopeRead, "GetSubscription": grpcx.ScopeRead,
		"ListDeliveries": grpcx.ScopeRead, "ListAttempts": grpcx.ScopeRead, "ListAlertRules": grpcx.ScopeRead,
		"GetBranding": grpcx.ScopeRead,
	})
}
