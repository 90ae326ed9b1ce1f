// Package consumer is live tagging: the partitioned consumer "tagging" on
// PARLEY_CONV (libs/partition: replicas divide the log's partitions, each
// read in stream order from a position stored with tagging's state). For
// each batch of one partition it folds every event into its conversation's
// facts, evaluates the tenant's enabled rules and the built-in detectors
// after each event, and records newly applied tags, the conversation
// states, the derived events (outbox) and the partition's new position in
// one PostgreSQL transaction, fenced by the partition's lease.
//
// Idempotence: an event whose stream sequence is not above the
// conversation's applied sequence is skipped (a replay after a crash
// between commit and read-ahead; an event that changes nothing, such as
// tagging's own, does not move it and stays a no-op when read again); a tag
// row exists at most once per (conversation, rule or detector, tag), and
// only the transaction that inserts it writes its events, whose ids are
// deterministic.
//
// Failures: an error the store reports as a data error, or a state that
// cannot be encoded, is permanent (the event is dead-lettered and its
// conversation held); anything else (connection, timeout, outage) pauses
// the consumer, which resumes from the stored positions.
//
// Memory: the states of recently touched conversations (facts and tags) are
// kept between batches, within a bound (Config.CacheBytes), per partition,
// and written through: a batch still reads each conversation's applied_seq
// and tags_rev under its lock and uses the kept state only while both are
// the values it knows, so rows changed by anyone else (backfill, rule
// deletion) are read again. A batch whose transaction fails keeps nothing;
// a partition's states are dropped when it moves away (Retain) or comes
// back under a new lease (Handle). The compiled rulesets are kept per
// tenant and checked against the tenant's generation in every batch.
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
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/rules"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging/internal/derive"
	"github.com/parley-dev/parley/services/tagging/internal/store"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Durable is live tagging's consumer name: its partition leases and
// positions, and its dead letters (parley.dlq.tagging).
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
	// CacheBytes bounds the estimated memory of the conversation states
	// kept between batches (DefaultCacheBytes when 0; negative: none kept).
	CacheBytes int64
}

// Consumer applies batches of events.
type Consumer struct {
	cfg    Config
	mu     sync.Mutex
	cache  map[string]*Ruleset
	states *stateCache
	// epochs is the lease epoch each cached partition's states were
	// stored under.
	epochs  map[int]int64
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
	c := &Consumer{cfg: cfg, cache: map[string]*Ruleset{}, epochs: map[int]int64{}}
	switch {
	case cfg.CacheBytes == 0:
		c.states = newStateCache(DefaultCacheBytes)
	case cfg.CacheBytes > 0:
		c.states = newStateCache(cfg.CacheBytes)
	}
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

// Forget drops every conversation state kept between batches.
func (c *Consumer) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.states.clear()
	clear(c.epochs)
}

// Retain drops the kept states of every partition this replica does not
// hold under the lease epoch it stored them with; owned maps each held
// partition to its epoch (OwnedLeases).
func (c *Consumer) Retain(owned map[int]int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p, e := range c.epochs {
		if o, ok := owned[p]; !ok || o != e {
			delete(c.epochs, p)
		}
	}
	c.states.retain(func(p int) bool { _, ok := c.epochs[p]; return ok })
}

// OwnedLeases returns the partitions whose unexpired lease member holds
// for the consumer, with their epochs.
func OwnedLeases(ctx context.Context, q partition.Querier, member string) (map[int]int64, error) {
	rows, err := q.Query(ctx, `SELECT partition, epoch FROM partition_leases
		WHERE consumer = $1 AND owner = $2 AND expires_at > clock_timestamp()`, Durable, member)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int]int64{}
	for rows.Next() {
		var p int
		var e int64
		if err := rows.Scan(&p, &e); err != nil {
			return nil, err
		}
		out[p] = e
	}
	return out, rows.Err()
}

// Handle is the partition.Handler. It applies the batch of one partition
// and commits the partition's position in the same transaction, fenced by
// the batch's lease. States kept for the partition under another lease
// (it moved away and came back) are dropped first.
func (c *Consumer) Handle(ctx context.Context, pb partition.Batch) error {
	return c.HandleRound(ctx, []partition.Batch{pb})
}

// HandleRound is the partition.RoundHandler: as Handle, for the batches of
// every partition read in a round, in one transaction that commits all
// their positions. Partitions hold disjoint conversations, so each
// conversation's events stay in stream order, and each state is kept under
// its own partition.
func (c *Consumer) HandleRound(ctx context.Context, round []partition.Batch) error {
	c.mu.Lock()
	for _, pb := range round {
		p := pb.Lease.Partition
		if e, ok := c.epochs[p]; !ok || e != pb.Lease.Epoch {
			c.states.retain(func(q int) bool { return q != p })
			c.epochs[p] = pb.Lease.Epoch
		}
	}
	c.mu.Unlock()
	commit := func(tx pgx.Tx) error { return partition.CommitRound(ctx, tx, round) }
	if len(round) == 1 {
		p := round[0].Lease.Partition
		return c.apply(ctx, round[0].Deliveries, func(store.ConvKey) int { return p }, commit)
	}
	var batch []*eventbus.Delivery
	parts := map[store.ConvKey]int{}
	for _, pb := range round {
		batch = append(batch, pb.Deliveries...)
		for _, d := range pb.Deliveries {
			parts[store.ConvKey{TenantID: d.Envelope.GetTenantId(), ConversationID: d.Envelope.GetConversationId()}] = pb.Lease.Partition
		}
	}
	return c.apply(ctx, batch, func(k store.ConvKey) int { return parts[k] }, commit)
}

// Apply applies a batch without recording a partition position (tests,
// tools).
func (c *Consumer) Apply(ctx context.Context, batch []*eventbus.Delivery) error {
	return c.apply(ctx, batch, func(store.ConvKey) int { return -1 }, nil)
}

// apply applies a batch in one transaction, usually in four round trips
// plus the position's commit: BEGIN; the tenants' generations, the
// conversation locks, states and tags (ReadBatch); the changed states and
// the new tags with their outbox events; COMMIT. States of recently touched
// conversations are kept in memory between batches (see stateCache), so
// that a conversation still at the applied_seq and tags_rev this consumer
// knows is neither sent by PostgreSQL nor decoded again; every change is
// still written in the batch's transaction, and only changed states are
// written. partOf names the partition a conversation's state is kept
// under; commit, when set, runs last in the transaction.
func (c *Consumer) apply(ctx context.Context, batch []*eventbus.Delivery, partOf func(store.ConvKey) int, commit func(pgx.Tx) error) error {
	keys := make([]store.ConvKey, 0, len(batch))
	var tenants []string
	seen := make(map[store.ConvKey]bool, len(batch))
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
	var stored map[store.ConvKey]*store.ConvState
	err := c.cfg.Store.InTx(ctx, func(tx pgx.Tx) error {
		queued, stats, stored = 0, stats[:0], nil
		// The states taken out of the cache come back only if this
		// transaction commits.
		rd, err := store.ReadBatch(ctx, tx, tenants, keys, c.states.take(keys))
		if err != nil {
			return err
		}
		sets := make(map[string]*Ruleset, len(rd.Generations))
		for t, g := range rd.Generations {
			if sets[t], err = c.ruleset(ctx, tx, t, g); err != nil {
				return err
			}
		}
		states := rd.States
		var apps []store.Application
		now := c.cfg.Clock()
		for _, d := range batch {
			env := d.Envelope
			k := store.ConvKey{TenantID: env.GetTenantId(), ConversationID: env.GetConversationId()}
			st := states[k]
			if d.StreamSeq != 0 && d.StreamSeq <= st.AppliedSeq {
				continue // redelivered: already applied
			}
			ev, changed := facts.Apply(st.Facts, env, c.cfg.Facts)
			if changed == 0 {
				// Nothing changed (tagging's own events, a message already
				// kept): the state and its applied_seq stay as they are;
				// applying the event again is as much a no-op, since only a
				// later event (which moves applied_seq past it) can change
				// the state.
				continue
			}
			st.AppliedSeq, st.Dirty = d.StreamSeq, true
			st.LastEvent = ev
			held := st.Tags
			trig := derive.TriggerOf(env, d.StreamSeq)
			var s stat
			apps, s = c.evaluate(ctx, sets[k.TenantID], st, ev, changed, env, trig, held, apps, now)
			stats = append(stats, s)
		}
		b := &pgx.Batch{}
		// Encoding errors cannot be fixed by retrying.
		if err := store.QueueSaveStates(b, states); err != nil {
			return eventbus.Permanent(err)
		}
		if err := store.QueueApply(b, apps, &queued); err != nil {
			return eventbus.Permanent(err)
		}
		if b.Len() > 0 {
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return err
			}
		}
		stored = states
		if commit != nil {
			return commit(tx)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for k, st := range stored {
		if st.Dirty {
			st.Stored, st.Dirty = true, false
		}
		if !st.Stored {
			delete(stored, k) // no row to mirror (only no-op events)
		}
	}
	c.keep(stored, partOf)
	for _, s := range stats {
		c.record(ctx, s)
	}
	if queued > 0 {
		c.cfg.Kick()
	}
	return nil
}

// keep caches the stored states, each under its conversation's partition.
func (c *Consumer) keep(stored map[store.ConvKey]*store.ConvState, partOf func(store.ConvKey) int) {
	byPart := map[int]map[store.ConvKey]*store.ConvState{}
	for k, st := range stored {
		p := partOf(k)
		if byPart[p] == nil {
			byPart[p] = map[store.ConvKey]*store.ConvState{}
		}
		byPart[p][k] = st
	}
	for p, states := range byPart {
		c.states.put(p, states)
	}
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
	trig derive.Trigger, held map[store.AppliedKey]int64, apps []store.Application, now time.Time) ([]store.Application, stat) {
	var s stat
	var in rules.Input
	bound := false
	full := st.EvaluatedGen != rs.Generation+1
	st.EvaluatedGen = rs.Generation + 1
	for _, r := range rs.Rules {
		if v, ok := held[store.AppliedKey{RuleID: r.RuleID, Tag: r.Tag}]; ok && v >= r.Version {
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
		_, existed := held[store.AppliedKey{RuleID: r.RuleID, Tag: r.Tag}]
		held[store.AppliedKey{RuleID: r.RuleID, Tag: r.Tag}] = r.Version
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
		_, ok := held[store.AppliedKey{RuleID: facts.DetectorRuleID(detector), Tag: detector}]
		return ok
	}
	for _, is := range rs.Detectors.Detect(st.Facts, ev, env, done) {
		ruleID := facts.DetectorRuleID(is.Detector)
		held[store.AppliedKey{RuleID: ruleID, Tag: is.Detector}] = 0
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
