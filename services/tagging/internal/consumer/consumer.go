// Package consumer is live tagging: the durable consumer "tagging" on
// PARLEY_CONV. For each batch it folds every event into its conversation's
// facts, evaluates the tenant's enabled rules and the built-in detectors
// after each event, and records newly applied tags, the conversation states
// and the derived events (outbox) in one PostgreSQL transaction.
//
// Idempotence: an event whose stream sequence is not above the
// conversation's applied sequence is skipped; a tag row exists at most once
// per (conversation, rule or detector, tag), and only the transaction that
// inserts it writes its events, whose ids are deterministic.
//
// Live tagging only adds tags. A rule whose condition stops holding later in
// the conversation keeps its tag: a conversation carries a rule's tag when
// the condition held after any of its events. Tags are removed only when a
// rule changes (Backfill, DeleteRule).
package consumer

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging/internal/derive"
	"github.com/parley-dev/parley/services/tagging/internal/facts"
	"github.com/parley-dev/parley/services/tagging/internal/rules"
	"github.com/parley-dev/parley/services/tagging/internal/store"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Durable is live tagging's consumer name on PARLEY_CONV.
const Durable = "tagging"

// Config configures a Consumer.
type Config struct {
	Store  *store.Store
	Engine *rules.Engine
	// Facts bound the per-conversation state.
	Facts facts.Options
	// Detectors are the service-wide detector defaults; a tenant's stored
	// settings override them.
	Detectors facts.Settings
	// Kick is called after a commit that queued events in the outbox.
	Kick  func()
	Log   *slog.Logger
	Meter metric.Meter
	Clock func() time.Time
}

// Consumer applies batches of events.
type Consumer struct {
	cfg     Config
	mu      sync.Mutex
	cache   map[string]*Ruleset
	applied metric.Int64Counter
	issues  metric.Int64Counter
	evalErr metric.Int64Counter
}

// New returns a consumer.
func New(cfg Config) *Consumer {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Kick == nil {
		cfg.Kick = func() {}
	}
	c := &Consumer{cfg: cfg, cache: map[string]*Ruleset{}}
	c.applied, _ = cfg.Meter.Int64Counter("parley.tagging.tags.applied",
		metric.WithDescription("Tags newly applied by live tagging, by source (rule, builtin_detector)"))
	c.issues, _ = cfg.Meter.Int64Counter("parley.tagging.issues.detected",
		metric.WithDescription("Issues found by the built-in detectors, by detector"))
	c.evalErr, _ = cfg.Meter.Int64Counter("parley.tagging.rule.evaluation_errors",
		metric.WithDescription("Rule evaluations that failed (missing key, cost limit); they count as no match"))
	return c
}

// Rule is a compiled enabled rule.
type Rule struct {
	store.Rule
	Program *rules.Program
}

// Ruleset is a tenant's compiled rules and detectors at one generation.
type Ruleset struct {
	Generation int64
	Rules      []Rule
	Detectors  *facts.Detectors
}

// EffectiveDetectors merges a tenant's stored settings over the defaults.
func EffectiveDetectors(ds store.DetectorSettings, def facts.Settings) facts.Settings {
	s := facts.Settings{
		Disabled: def.Disabled, LongWait: time.Duration(ds.LongWaitMS) * time.Millisecond,
		RepeatWindow: ds.RepeatWindow, NegativePhrases: ds.NegativePhrases,
	}
	if ds.Set {
		s.Disabled = ds.Disabled
	}
	return s.Or(def)
}

// ruleset returns the tenant's compiled rules at generation gen, loading and
// compiling them when the cache holds another generation.
func (c *Consumer) ruleset(ctx context.Context, tx pgx.Tx, tenant string, gen int64) (*Ruleset, error) {
	c.mu.Lock()
	rs := c.cache[tenant]
	c.mu.Unlock()
	if rs != nil && rs.Generation == gen {
		return rs, nil
	}
	loaded, err := store.LoadRuleset(ctx, tx, tenant)
	if err != nil {
		return nil, err
	}
	rs = &Ruleset{Generation: gen, Detectors: facts.NewDetectors(EffectiveDetectors(loaded.Detectors, c.cfg.Detectors))}
	for _, r := range loaded.Rules {
		prg, err := c.cfg.Engine.Compile(r.Expression)
		if err != nil {
			// Rules are validated when stored; this means the language
			// changed under a stored rule. Skip it rather than stall.
			c.cfg.Log.ErrorContext(ctx, "stored rule does not compile; skipped", "tenant_id", tenant, "rule_id", r.RuleID, "err", err)
			continue
		}
		rs.Rules = append(rs.Rules, Rule{Rule: r, Program: prg})
	}
	c.mu.Lock()
	c.cache[tenant] = rs
	c.mu.Unlock()
	return rs, nil
}

// appliedKey indexes a conversation's tags in effect.
type appliedKey struct{ ruleID, tag string }

// Handle is an eventbus.Handler.
func (c *Consumer) Handle(ctx context.Context, batch []*eventbus.Delivery) error {
	var keys []store.ConvKey
	var tenants []string
	seen := map[store.ConvKey]bool{}
	for _, d := range batch {
		k := store.ConvKey{TenantID: d.Envelope.GetTenantId(), ConversationID: d.Envelope.GetConversationId()}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
			tenants = append(tenants, k.TenantID)
		}
	}
	var queued int
	var stats []stat
	err := c.cfg.Store.InTx(ctx, func(tx pgx.Tx) error {
		queued, stats = 0, stats[:0]
		gens, err := store.LockTenants(ctx, tx, tenants)
		if err != nil {
			return err
		}
		sets := map[string]*Ruleset{}
		for t, g := range gens {
			if sets[t], err = c.ruleset(ctx, tx, t, g); err != nil {
				return err
			}
		}
		if err := store.LockConversations(ctx, tx, keys); err != nil {
			return err
		}
		states, err := store.LoadStates(ctx, tx, keys)
		if err != nil {
			return err
		}
		appliedRows, err := store.LoadApplied(ctx, tx, keys)
		if err != nil {
			return err
		}
		applied := map[store.ConvKey]map[appliedKey]int64{}
		for k, rows := range appliedRows {
			m := map[appliedKey]int64{}
			for _, a := range rows {
				m[appliedKey{a.RuleID, a.Tag}] = a.RuleVersion
			}
			applied[k] = m
		}
		var apps []store.Application
		now := c.cfg.Clock()
		for _, d := range batch {
			env := d.Envelope
			k := store.ConvKey{TenantID: env.GetTenantId(), ConversationID: env.GetConversationId()}
			st := states[k]
			if st == nil {
				st = &store.ConvState{Facts: &taggingv1.RuleConversation{}, LastEvent: &taggingv1.RuleEvent{}}
				states[k] = st
			}
			if d.StreamSeq != 0 && d.StreamSeq <= st.AppliedSeq {
				continue // redelivered: already applied
			}
			ev, changed := facts.Apply(st.Facts, env, c.cfg.Facts)
			st.AppliedSeq, st.Dirty = d.StreamSeq, true
			if changed == 0 {
				continue
			}
			st.LastEvent = ev
			held := applied[k]
			if held == nil {
				held = map[appliedKey]int64{}
				applied[k] = held
			}
			trig := derive.TriggerOf(env, d.StreamSeq)
			var s stat
			apps, s = c.evaluate(ctx, sets[k.TenantID], st, ev, changed, env, trig, held, apps, now)
			stats = append(stats, s)
		}
		if err := store.SaveStates(ctx, tx, states); err != nil {
			return err
		}
		queued, err = store.Apply(ctx, tx, apps)
		return err
	})
	if err != nil {
		return err
	}
	for _, s := range stats {
		c.record(ctx, s)
	}
	if queued > 0 {
		c.cfg.Kick()
	}
	return nil
}

// stat is what one event's evaluation produced, for metrics after commit.
type stat struct {
	rules     int
	detectors []string
	evalErrs  int
}

func (c *Consumer) record(ctx context.Context, s stat) {
	if s.rules > 0 {
		c.applied.Add(ctx, int64(s.rules), metric.WithAttributes(attribute.String("source", store.SourceRule)))
	}
	for _, d := range s.detectors {
		c.applied.Add(ctx, 1, metric.WithAttributes(attribute.String("source", store.SourceDetector)))
		c.issues.Add(ctx, 1, metric.WithAttributes(attribute.String("detector", d)))
	}
	if s.evalErrs > 0 {
		c.evalErr.Add(ctx, int64(s.evalErrs))
	}
}

// evaluate runs the rules not yet in effect at their current version and
// the detectors that have not fired, after one event. The first event after
// the tenant's rules changed evaluates every rule; later events only the
// rules that read what the event changed (the others keep their value, which
// was false).
func (c *Consumer) evaluate(ctx context.Context, rs *Ruleset, st *store.ConvState, ev *taggingv1.RuleEvent, changed facts.Fields, env *eventv1.Envelope,
	trig derive.Trigger, held map[appliedKey]int64, apps []store.Application, now time.Time) ([]store.Application, stat) {
	var s stat
	var in rules.Input
	bound := false
	full := st.EvaluatedGen != rs.Generation+1
	st.EvaluatedGen = rs.Generation + 1
	for _, r := range rs.Rules {
		if v, ok := held[appliedKey{r.RuleID, r.Tag}]; ok && v >= r.Version {
			continue
		}
		if !full && !r.Program.Needs(changed) {
			continue
		}
		if !bound {
			in, bound = rules.NewInput(st.Facts, ev), true
		}
		ok, err := r.Program.Eval(ctx, in)
		if err != nil {
			s.evalErrs++
			c.cfg.Log.DebugContext(ctx, "rule evaluation failed (no match)", "tenant_id", trig.TenantID, "conversation_id", trig.ConversationID, "rule_id", r.RuleID, "err", err)
			continue
		}
		if !ok {
			continue
		}
		_, existed := held[appliedKey{r.RuleID, r.Tag}]
		held[appliedKey{r.RuleID, r.Tag}] = r.Version
		e := derive.TagApplied(trig, r.RuleID, r.Version, r.Tag, eventv1.TagSource_TAG_SOURCE_RULE, now)
		apps = append(apps, store.Application{TenantID: trig.TenantID, Applied: store.Applied{
			ConversationID: trig.ConversationID, RuleID: r.RuleID, Tag: r.Tag, Source: store.SourceRule,
			RuleVersion: r.Version, TriggerSeq: trig.Seq, EventID: e.GetEventId(),
		}, Events: []*eventv1.Envelope{e}})
		if !existed {
			s.rules++
		}
	}
	done := func(detector string) bool {
		_, ok := held[appliedKey{facts.DetectorRuleID(detector), detector}]
		return ok
	}
	for _, is := range rs.Detectors.Detect(st.Facts, ev, env, done) {
		ruleID := facts.DetectorRuleID(is.Detector)
		held[appliedKey{ruleID, is.Detector}] = 0
		issue := derive.IssueDetected(trig, is.Detector, is.MessageID, is.Details, now)
		tag := derive.TagApplied(trig, ruleID, 0, is.Detector, eventv1.TagSource_TAG_SOURCE_BUILTIN_DETECTOR, now)
		apps = append(apps, store.Application{TenantID: trig.TenantID, Applied: store.Applied{
			ConversationID: trig.ConversationID, RuleID: ruleID, Tag: is.Detector, Source: store.SourceDetector,
			TriggerSeq: trig.Seq, EventID: tag.GetEventId(),
		}, Events: []*eventv1.Envelope{issue, tag}})
		s.detectors = append(s.detectors, is.Detector)
	}
	return apps, s
}
