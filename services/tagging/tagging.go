// Package tagging is the service that tags conversations by rules and
// built-in issue detectors, and records manual labels and flags.
//
// Live tagging is the partitioned consumer "tagging" on PARLEY_CONV
// (libs/partition: replicas divide the partitions, each partition's
// position is committed with its effects): it folds every event into its
// conversation's facts (kept in PostgreSQL with the stream sequence
// applied), evaluates the tenant's enabled rules (CEL
// expressions) and the built-in detectors after each event, and appends
// TagApplied and IssueDetected through a transactional outbox. The gRPC API
// manages rules, tests them against a conversation, backfills a rule over
// the tenant's history, and appends labels and flags.
package tagging

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/httpgw"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/rules"
	"github.com/parley-dev/parley/libs/service"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging/internal/api"
	"github.com/parley-dev/parley/services/tagging/internal/backfill"
	"github.com/parley-dev/parley/services/tagging/internal/consumer"
	"github.com/parley-dev/parley/services/tagging/internal/outbox"
	"github.com/parley-dev/parley/services/tagging/internal/preview"
	"github.com/parley-dev/parley/services/tagging/internal/store"
)

// DefaultMaxRulesPerTenant is PARLEY_TAGGING_MAX_RULES_PER_TENANT's default.
const DefaultMaxRulesPerTenant = 200

// Config is tagging's configuration, read from the environment. Zero values
// (a Config built in code) mean the documented defaults.
type Config struct {
	// Config is the header every service shares: PARLEY_LOG_LEVEL,
	// PARLEY_NATS_*, PARLEY_POSTGRES_*, PARLEY_TAGGING_GRPC_ADDR,
	// PARLEY_TAGGING_ADMIN_ADDR, ... (libs/service).
	service.Config
	// ConsumerBatch is the most events of one partition live tagging
	// applies in one transaction.
	ConsumerBatch int `env:"PARLEY_TAGGING_CONSUMER_BATCH" envDefault:"500"`
	// ConsumerPerPartition switches off rounds: each partition's events are
	// then applied in their own transaction instead of those of all owned
	// partitions read together in one.
	ConsumerPerPartition bool `env:"PARLEY_TAGGING_CONSUMER_PER_PARTITION" envDefault:"false"`
	// MaxMessages is how many recent messages each conversation's facts keep
	// for rules (`conversation.messages`); counts stay exact.
	MaxMessages int `env:"PARLEY_TAGGING_MAX_MESSAGES" envDefault:"50"`
	// RuleCostLimit bounds one rule evaluation in CEL cost units; an
	// evaluation over it counts as no match.
	RuleCostLimit uint64 `env:"PARLEY_TAGGING_RULE_COST_LIMIT" envDefault:"1000000"`
	// MaxExpressionBytes is the longest rule expression accepted.
	MaxExpressionBytes int `env:"PARLEY_TAGGING_MAX_EXPRESSION_BYTES" envDefault:"4096"`
	// MaxEventTextBytes is the longest `event.text` the rules' worst-case
	// cost estimate assumes; keep it at ingest's PARLEY_INGEST_MAX_TEXT_BYTES.
	MaxEventTextBytes int `env:"PARLEY_TAGGING_MAX_EVENT_TEXT_BYTES" envDefault:"16384"`
	// MaxRulesPerTenant bounds each tenant's rules (a negative value: no
	// limit).
	MaxRulesPerTenant int `env:"PARLEY_TAGGING_MAX_RULES_PER_TENANT" envDefault:"200"`
	// DetectorsDisabled names built-in detectors that are off unless a
	// tenant's settings say otherwise, comma separated.
	DetectorsDisabled []string `env:"PARLEY_TAGGING_DETECTORS_DISABLED"`
	// LongWait is the default long-wait threshold for bot and agent
	// responses.
	LongWait time.Duration `env:"PARLEY_TAGGING_LONG_WAIT" envDefault:"30s"`
	// RepeatWindow is how many earlier visitor messages repeated-question
	// compares with, by default.
	RepeatWindow int `env:"PARLEY_TAGGING_REPEAT_WINDOW" envDefault:"5"`
	// NegativePhrases are negative-feedback's default words and phrases,
	// comma separated.
	NegativePhrases []string `env:"PARLEY_TAGGING_NEGATIVE_PHRASES" envDefault:"useless,not helpful,terrible,speak to a human,talk to a human,real person,that's wrong,you are wrong,waste of time"`
	// BackfillMaxConversations bounds the conversation states one backfill
	// pass holds in memory; larger tenants are replayed in partitions.
	BackfillMaxConversations int `env:"PARLEY_TAGGING_BACKFILL_MAX_CONVERSATIONS" envDefault:"100000"`
	// MaxConcurrentBackfills bounds backfills running at once; more wait.
	MaxConcurrentBackfills int `env:"PARLEY_TAGGING_MAX_CONCURRENT_BACKFILLS" envDefault:"2"`
	// MaxBackfillsPerTenant bounds one tenant's backfills running or
	// waiting at once; more are refused (ResourceExhausted). Keep it below
	// MaxConcurrentBackfills so that another tenant's backfill can start.
	MaxBackfillsPerTenant int `env:"PARLEY_TAGGING_MAX_BACKFILLS_PER_TENANT" envDefault:"1"`
	// HTTPAddr serves the HTTP/JSON API (grpc-gateway: PreviewRule); empty:
	// none (the local stack serves it on :7303).
	HTTPAddr string `env:"PARLEY_TAGGING_HTTP_ADDR" envDefault:""`
	// CORSOrigins are browser origins allowed to call the HTTP API, comma
	// separated; "*" allows any.
	CORSOrigins []string `env:"PARLEY_TAGGING_CORS_ORIGINS" envDefault:""`
	// Partitions is the number of partitions the log is divided into among
	// replicas; fixed per deployment (docs/operations.md).
	Partitions int `env:"PARLEY_PARTITIONS" envDefault:"16"`
	// LeaseTTL is how long a replica's partition leases live without a
	// heartbeat: a dead replica's partitions move within about this long.
	LeaseTTL time.Duration `env:"PARLEY_PARTITION_LEASE_TTL" envDefault:"5s"`
	// Member names this replica among the consumer's members (default:
	// host name and a random suffix).
	Member string `env:"PARLEY_PARTITION_MEMBER"`
	// Wrap, when set, wraps the consumer's handler (fault injection in
	// tests).
	Wrap func(partition.Handler) partition.Handler `env:"-"`
	// KeepLeases, when set, stops without releasing the partition leases,
	// as a crashed replica does (tests).
	KeepLeases bool `env:"-"`
}

func (cfg *Config) partitionDefaults() {
	if cfg.Partitions <= 0 {
		cfg.Partitions = partition.DefaultPartitions
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = partition.DefaultLeaseTTL
	}
	if cfg.Member == "" {
		host, _ := os.Hostname()
		cfg.Member = host + "-" + eventbus.NewEventID()
	}
}

// Detectors returns the service-wide detector defaults of cfg.
func (cfg Config) Detectors() facts.Settings {
	s := facts.Settings{Disabled: cfg.DetectorsDisabled, LongWait: cfg.LongWait, RepeatWindow: cfg.RepeatWindow, NegativePhrases: cfg.NegativePhrases}
	return s.Or(facts.DefaultSettings())
}

// Run serves tagging until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	cfg.partitionDefaults()
	b, err := service.Start(ctx, service.Options{
		Name: "tagging", Config: cfg.Config, Scopes: Scopes(),
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
	engine, err := rules.NewEngine(rules.Options{
		MaxExpressionBytes: cfg.MaxExpressionBytes, CostLimit: cfg.RuleCostLimit,
		MaxMessages: cfg.MaxMessages, EventTextBytes: cfg.MaxEventTextBytes,
	})
	if err != nil {
		b.Close()
		return err
	}
	detectors := cfg.Detectors()
	if field, problem := detectors.Validate(); field != "" {
		b.Close()
		return &configError{field: field, problem: problem}
	}
	maxRules := cfg.MaxRulesPerTenant
	switch {
	case maxRules == 0:
		maxRules = DefaultMaxRulesPerTenant
	case maxRules < 0:
		maxRules = 0 // no limit
	}
	st := store.New(b.PG)
	meter := b.Tel.MeterProvider.Meter("github.com/parley-dev/parley/services/tagging")
	relay := outbox.New(st, b.Bus, b.Log, meter)
	factsOpts := facts.Options{MaxMessages: cfg.MaxMessages}
	cons := consumer.New(consumer.Config{
		Store: st, Engine: engine, Facts: factsOpts, Detectors: detectors, Kick: relay.Kick, Log: b.Log, Meter: meter,
	})
	bf := backfill.New(backfill.Config{
		Store: st, Engine: engine, Bus: b.Bus, Facts: factsOpts,
		MaxConversations: cfg.BackfillMaxConversations, Kick: relay.Kick, Log: b.Log,
	})
	taggingv1.RegisterTaggingServiceServer(b.GRPC, api.New(api.Deps{
		Store: st, Engine: engine, Bus: b.Bus, Backfill: bf, Preview: preview.New(st, b.Bus, bf, nil), Detectors: detectors, Kick: relay.Kick,
		MaxConcurrentBackfills: cfg.MaxConcurrentBackfills, MaxBackfillsPerTenant: cfg.MaxBackfillsPerTenant,
		MaxRulesPerTenant: maxRules, Log: b.Log,
	}))
	batch := cfg.ConsumerBatch
	if batch <= 0 {
		batch = 500
	}
	handle, round := partition.Handlers(cons.Handle, cons.HandleRound, cfg.ConsumerPerPartition, cfg.Wrap)
	pc := partition.NewConsumer(partition.Config{
		Bus: b.Bus, Pool: b.PG, BatchSize: batch, Log: b.Log, Meter: b.Tel.Meter("github.com/parley-dev/parley/libs/partition"),
		Coordinator: partition.NewCoordinator(b.PG, consumer.Durable, cfg.Member, cfg.Partitions, cfg.LeaseTTL),
		Round:       round,
	})
	b.AddCheck("consumer", pc.Ready)
	consume := func(ctx context.Context) error {
		removeDurable(ctx, b)
		// Every replica applies the partitions it holds a lease on; the
		// kept conversation states follow the leases.
		g, gctx := errgroup.WithContext(ctx)
		g.Go(func() error { return pc.Run(gctx, handle) })
		g.Go(func() error { retainOwned(gctx, b, cons, cfg.Member, cfg.LeaseTTL/3); return nil })
		err := g.Wait()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout(cfg.Server))
		defer cancel()
		if !cfg.KeepLeases { // a crashed replica's leases expire after their TTL
			if lerr := pc.Leave(dctx); lerr != nil {
				b.Log.WarnContext(dctx, "partition leases not released; they move after their TTL", "err", lerr)
			}
		}
		return err
	}
	// Every replica relays every pending outbox row (of any conversation):
	// deterministic event ids, sent as Nats-Msg-Id, make a row two relays
	// publish stored once, and each relay publishes in row order.
	workers := []func(context.Context) error{consume, func(ctx context.Context) error { return relay.Run(ctx, 2*time.Second) }}
	if cfg.HTTPAddr != "" {
		serve, err := httpAPI(ctx, b, cfg)
		if err != nil {
			b.Close()
			return err
		}
		workers = append(workers, serve)
	}
	return b.Run(ctx, workers...)
}

// httpAPI builds the HTTP/JSON gateway (proto/http.yaml) and returns the
// worker serving it.
func httpAPI(ctx context.Context, b *service.Base, cfg Config) (func(context.Context) error, error) {
	gw, err := httpgw.New(httpgw.Config{Name: "tagging-http", GRPCAddr: b.GRPCAddr(), CORSOrigins: cfg.CORSOrigins,
		Routes: []string{"/v1/rules:preview"}, MaxBodyBytes: 1 << 20, TracerProvider: b.Tel.TracerProvider, Propagator: b.Tel.Propagator})
	if err != nil {
		return nil, err
	}
	b.OnClose(func() { _ = gw.Close() })
	if err := taggingv1.RegisterTaggingServiceHandler(ctx, gw.GW, gw.Conn); err != nil {
		return nil, fmt.Errorf("tagging: http gateway: %w", err)
	}
	return func(ctx context.Context) error {
		return httpgw.Serve(ctx, cfg.HTTPAddr, gw.Handler(), b.Log, cfg.Server.HTTP)
	}, nil
}

// removeDurable deletes the durable JetStream consumer earlier versions
// read the log with (acks, redelivery); positions live in PostgreSQL now.
func removeDurable(ctx context.Context, b *service.Base) {
	if err := b.Bus.DeleteConsumer(ctx, consumer.Durable); err != nil {
		b.Log.WarnContext(ctx, "could not remove the old durable consumer", "err", err)
	}
}

// retainOwned drops, every interval, the kept conversation states of
// partitions this replica no longer holds, until ctx ends.
func retainOwned(ctx context.Context, b *service.Base, cons *consumer.Consumer, member string, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		owned, err := consumer.OwnedLeases(ctx, b.PG, member)
		if err != nil {
			continue // the consumer pauses too; Handle checks the epoch
		}
		cons.Retain(owned)
	}
}

func shutdownTimeout(s config.Server) time.Duration {
	if s.ShutdownTimeout > 0 {
		return s.ShutdownTimeout
	}
	return 20 * time.Second
}

type configError struct{ field, problem string }

func (e *configError) Error() string {
	return "tagging: detector defaults (PARLEY_TAGGING_*): " + e.field + ": " + e.problem
}

// Scopes lists the API-key scope each method needs: reads (ListRules,
// ListLabels, GetDetectors) need "read"; CreateRule, UpdateRule,
// SetRuleEnabled, DeleteRule, TestRule and Backfill need "rules"; the rest
// "admin" (which implies every scope).
func Scopes() map[string]string { return api.Scopes() }
