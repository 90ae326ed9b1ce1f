// Package tagging is the service that tags conversations by rules and
// built-in issue detectors, and records manual labels and flags.
//
// Live tagging is the durable consumer "tagging" on PARLEY_CONV: it folds
// every event into its conversation's facts (kept in PostgreSQL with the
// stream sequence applied), evaluates the tenant's enabled rules (CEL
// expressions) and the built-in detectors after each event, and appends
// TagApplied and IssueDetected through a transactional outbox. The gRPC API
// manages rules, tests them against a conversation, backfills a rule over
// the tenant's history, and appends labels and flags.
package tagging

import (
	"context"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/leader"
	"github.com/parley-dev/parley/libs/service"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging/internal/api"
	"github.com/parley-dev/parley/services/tagging/internal/backfill"
	"github.com/parley-dev/parley/services/tagging/internal/consumer"
	"github.com/parley-dev/parley/services/tagging/internal/facts"
	"github.com/parley-dev/parley/services/tagging/internal/outbox"
	"github.com/parley-dev/parley/services/tagging/internal/rules"
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
	// ConsumerBatch is the most events live tagging applies in one
	// transaction.
	ConsumerBatch int `env:"PARLEY_TAGGING_CONSUMER_BATCH" envDefault:"500"`
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
}

// Detectors returns the service-wide detector defaults of cfg.
func (cfg Config) Detectors() facts.Settings {
	s := facts.Settings{Disabled: cfg.DetectorsDisabled, LongWait: cfg.LongWait, RepeatWindow: cfg.RepeatWindow, NegativePhrases: cfg.NegativePhrases}
	return s.Or(facts.DefaultSettings())
}

// Run serves tagging until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
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
		Store: st, Engine: engine, JS: b.Bus.JetStream(), Facts: factsOpts,
		MaxConversations: cfg.BackfillMaxConversations, Kick: relay.Kick, Log: b.Log,
	})
	taggingv1.RegisterTaggingServiceServer(b.GRPC, api.New(api.Deps{
		Store: st, Engine: engine, Bus: b.Bus, Backfill: bf, Detectors: detectors, Kick: relay.Kick,
		MaxConcurrentBackfills: cfg.MaxConcurrentBackfills, MaxBackfillsPerTenant: cfg.MaxBackfillsPerTenant,
		MaxRulesPerTenant: maxRules, Log: b.Log,
	}))
	batch := cfg.ConsumerBatch
	if batch <= 0 {
		batch = 500
	}
	return b.Run(ctx,
		func(ctx context.Context) error {
			// One replica at a time consumes; the others stand by.
			return leader.Run(ctx, b.PG, leader.Key("tagging"), 2*time.Second, "live tagging", b.Log, func(ctx context.Context) error {
				// States kept from an earlier turn may be stale (another
				// replica consumed meanwhile; ReadBatch would notice).
				cons.Forget()
				return b.Bus.Consume(ctx, eventbus.ConsumerConfig{Durable: consumer.Durable, BatchSize: batch}, cons.Handle)
			})
		},
		func(ctx context.Context) error { return relay.Run(ctx, 2*time.Second) },
	)
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
