// Package backfill applies one rule to a tenant's history: it replays the
// tenant's events from the log (an ordered consumer, deliver all), folds them
// per conversation exactly as live tagging does, and finds the conversations
// where the rule's condition held after some event. It then applies the
// rule's tag where it is missing and removes it where the condition never
// held (or where the tag is an old name of the rule's tag).
//
// It runs while live tagging continues. Both write under the same
// per-conversation lock; a removal spares a tag that the current rule version
// applied on events newer than the replayed history. Running it twice
// changes nothing the second time.
//
// Memory: the fold keeps one conversation state per conversation in memory.
// When a pass would hold more than MaxConversations, the conversations are
// split by a hash of their id into partitions that are replayed one after
// the other (each pass reads the tenant's history again).
package backfill

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/rules"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging/internal/derive"
	"github.com/parley-dev/parley/services/tagging/internal/store"
	"google.golang.org/protobuf/proto"
)

// Errors callers map to gRPC codes.
var (
	// ErrDisabled: a disabled rule is not backfilled.
	ErrDisabled = errors.New("backfill: the rule is disabled")
	// ErrTooLarge: even the finest partitioning holds too many conversations.
	ErrTooLarge = errors.New("backfill: too many conversations per partition")
	// ErrNotCompilable: the stored rule's expression no longer compiles
	// (the language or the cost limit changed under it).
	ErrNotCompilable = errors.New("backfill: the stored rule does not compile")
)

// Defaults.
const (
	DefaultMaxConversations = 100_000
	maxPartitions           = 1024
	chunkSize               = 200
)

// Config configures a Backfiller.
type Config struct {
	Store  *store.Store
	Engine *rules.Engine
	Bus    *eventbus.Bus
	Facts  facts.Options
	// MaxConversations bounds the conversation states one pass holds in
	// memory (DefaultMaxConversations when 0).
	MaxConversations int
	// ProgressEvery is the least time between progress reports during a
	// pass (1s when 0).
	ProgressEvery time.Duration
	// Kick is called after a commit that queued events in the outbox.
	Kick  func()
	Log   *slog.Logger
	Clock func() time.Time
}

// Backfiller runs backfills.
type Backfiller struct {
	cfg Config
}

// New returns a backfiller.
func New(cfg Config) *Backfiller {
	if cfg.MaxConversations <= 0 {
		cfg.MaxConversations = DefaultMaxConversations
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = time.Second
	}
	if cfg.Kick == nil {
		cfg.Kick = func() {}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &Backfiller{cfg: cfg}
}

// partition selects the conversations whose id hash is rem modulo mod.
type partition struct{ mod, rem uint64 }

func (p partition) has(conv string) bool {
	if p.mod <= 1 {
		return true
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(conv))
	return h.Sum64()%p.mod == p.rem
}

// conv is one conversation's replay state.
type conv struct {
	facts     *taggingv1.RuleConversation // nil once matched
	evaluated bool
	matched   bool
	trigger   derive.Trigger
	// firstSeq is the stream sequence of its first replayed event.
	firstSeq uint64
}

// Result is what a replay found for one conversation.
type Result struct {
	// Matched: the rule's condition held after one of its events.
	Matched bool
	// FirstSeq is the stream sequence of its first replayed event.
	FirstSeq uint64
}

// Evaluate replays the tenant's events with stream sequences from..to,
// folding them per conversation and evaluating prg after each event exactly
// as Run (and live tagging) does, and returns each conversation's result and
// the number of events read. It changes nothing. ErrTooLarge: the range holds
// more than MaxConversations conversations.
func (b *Backfiller) Evaluate(ctx context.Context, tenant string, from, to uint64, prg *rules.Program) (map[string]Result, uint64, error) {
	prog := &taggingv1.BackfillProgress{}
	convs, complete, err := b.scan(ctx, tenant, from, to, partition{1, 0}, prg, prog, func(*taggingv1.BackfillProgress) error { return nil })
	if err != nil {
		return nil, prog.EventsScanned, err
	}
	if !complete {
		return nil, prog.EventsScanned, ErrTooLarge
	}
	out := make(map[string]Result, len(convs))
	for id, c := range convs {
		out[id] = Result{Matched: c.matched, FirstSeq: c.firstSeq}
	}
	return out, prog.EventsScanned, nil
}

// Run backfills rule ruleID of tenant, calling report with progress (and a
// final report with Done set). report errors abort the run.
func (b *Backfiller) Run(ctx context.Context, tenant, ruleID string, report func(*taggingv1.BackfillProgress) error) error {
	rule, err := b.cfg.Store.GetRule(ctx, tenant, ruleID)
	if err != nil {
		return err
	}
	if !rule.Enabled {
		return ErrDisabled
	}
	prg, err := b.cfg.Engine.Compile(rule.Expression)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotCompilable, err)
	}
	lastSeq, err := b.lastSeq(ctx, tenant)
	if err != nil {
		return err
	}
	prog := &taggingv1.BackfillProgress{RuleVersion: rule.Version}
	runID := eventbus.NewEventID()
	log := b.cfg.Log.With("tenant_id", tenant, "rule_id", ruleID, "rule_version", rule.Version, "backfill_id", runID)
	log.InfoContext(ctx, "backfill started", "last_seq", lastSeq)
	queue := []partition{{1, 0}}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		convs, complete, err := b.scan(ctx, tenant, 1, lastSeq, p, prg, prog, report)
		if err != nil {
			return err
		}
		if !complete {
			if p.mod*2 > maxPartitions {
				return ErrTooLarge
			}
			log.InfoContext(ctx, "backfill pass over the memory bound; splitting", "partitions", p.mod*2)
			queue = append(queue, partition{p.mod * 2, p.rem}, partition{p.mod * 2, p.rem + p.mod})
			continue
		}
		if err := b.reconcile(ctx, rule, p, convs, lastSeq, runID, prog); err != nil {
			return err
		}
		if err := report(proto.Clone(prog).(*taggingv1.BackfillProgress)); err != nil {
			return err
		}
	}
	prog.Done = true
	log.InfoContext(ctx, "backfill done", "conversations", prog.ConversationsScanned, "matched", prog.ConversationsMatched,
		"applied", prog.TagsApplied, "removed", prog.TagsRemoved, "events", prog.EventsScanned)
	return report(prog)
}

// lastSeq is the stream sequence of the tenant's newest event (0: none).
// The replay stops there; later events are live tagging's.
func (b *Backfiller) lastSeq(ctx context.Context, tenant string) (uint64, error) {
	m, found, err := b.cfg.Bus.LastOnSubject(ctx, eventbus.TenantSubjects(tenant))
	if err != nil {
		return 0, fmt.Errorf("backfill: last event of tenant: %w: %v", eventbus.ErrUnavailable, err)
	}
	if !found {
		return 0, nil
	}
	return m.Sequence, nil
}

// errTooMany stops a replay whose partition holds more conversations than
// allowed.
var errTooMany = errors.New("backfill: too many conversations")

// scan replays the tenant's history from..lastSeq for the conversations of
// p. complete is false when p holds more conversations than allowed.
func (b *Backfiller) scan(ctx context.Context, tenant string, from, lastSeq uint64, p partition, prg *rules.Program,
	prog *taggingv1.BackfillProgress, report func(*taggingv1.BackfillProgress) error) (map[string]*conv, bool, error) {
	convs := map[string]*conv{}
	if lastSeq == 0 || lastSeq < from {
		return convs, true, nil
	}
	lastReport := b.cfg.Clock()
	_, err := b.cfg.Bus.Replay(ctx, from, lastSeq, 1000, []string{eventbus.TenantSubjects(tenant)}, func(ctx context.Context, batch []*eventbus.Delivery) error {
		for _, d := range batch {
			prog.EventsScanned++
			if err := b.fold(ctx, convs, d.Envelope, d.Subject, d.StreamSeq, p, prg); err != nil {
				b.cfg.Log.WarnContext(ctx, "backfill: event skipped", "subject", d.Subject, "stream_seq", d.StreamSeq, "err", err)
			}
			if len(convs) > b.cfg.MaxConversations {
				return errTooMany
			}
			if now := b.cfg.Clock(); now.Sub(lastReport) >= b.cfg.ProgressEvery {
				lastReport = now
				if err := report(proto.Clone(prog).(*taggingv1.BackfillProgress)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errTooMany):
		return nil, false, nil
	case err != nil && ctx.Err() != nil:
		return nil, false, ctx.Err()
	case err != nil && errors.Is(err, eventbus.ErrUnavailable):
		return nil, false, fmt.Errorf("backfill: replay: %w", err)
	case err != nil:
		return nil, false, err
	}
	return convs, true, nil
}

func (b *Backfiller) fold(ctx context.Context, convs map[string]*conv, env *eventv1.Envelope, subject string, seq uint64, p partition, prg *rules.Program) error {
	_, convID, _, err := eventbus.ParseConvSubject(subject)
	if err != nil {
		return err
	}
	if !p.has(convID) {
		return nil
	}
	c := convs[convID]
	if c != nil && c.matched {
		return nil
	}
	if env.GetConversationId() != convID {
		return fmt.Errorf("envelope conversation %q on subject of %q", env.GetConversationId(), convID)
	}
	if c == nil {
		c = &conv{facts: &taggingv1.RuleConversation{}, firstSeq: seq}
		convs[convID] = c
	}
	ev, changed := facts.Apply(c.facts, env, b.cfg.Facts)
	if changed == 0 || (c.evaluated && !prg.Needs(changed)) {
		return nil // as in live tagging: the value cannot have changed
	}
	c.evaluated = true
	ok, err := prg.Eval(ctx, rules.NewInput(c.facts, ev))
	if err != nil || !ok {
		return nil // an evaluation error is no match, as in live tagging
	}
	c.matched, c.facts, c.trigger = true, nil, derive.TriggerOf(env, seq)
	return nil
}

// reconcile makes the rule's tags on p's conversations match the replay.
func (b *Backfiller) reconcile(ctx context.Context, rule store.Rule, p partition, convs map[string]*conv, lastSeq uint64, runID string, prog *taggingv1.BackfillProgress) error {
	existing, err := b.cfg.Store.AppliedForRule(ctx, rule.TenantID, rule.RuleID)
	if err != nil {
		return err
	}
	now := b.cfg.Clock()
	current := map[string]store.Applied{} // conv -> row of the rule's current tag
	var removals []store.Removal
	for _, a := range existing {
		if !p.has(a.ConversationID) {
			continue
		}
		switch {
		case a.Tag != rule.Tag:
			removals = append(removals, store.Removal{ConversationID: a.ConversationID, Tag: a.Tag})
		case convs[a.ConversationID] == nil || !convs[a.ConversationID].matched:
			removals = append(removals, store.Removal{ConversationID: a.ConversationID, Tag: a.Tag, Guarded: true})
		default:
			current[a.ConversationID] = a
		}
	}
	var apps []store.Application
	for id, c := range convs {
		if !c.matched {
			continue
		}
		prog.ConversationsMatched++
		if a, ok := current[id]; ok && a.RuleVersion >= rule.Version {
			continue
		}
		t := c.trigger
		t.CorrelationID = runID
		e := derive.TagApplied(t, rule.RuleID, rule.Version, rule.Tag, eventv1.TagSource_TAG_SOURCE_BACKFILL, now)
		apps = append(apps, store.Application{TenantID: rule.TenantID, Applied: store.Applied{
			ConversationID: id, RuleID: rule.RuleID, Tag: rule.Tag, Source: store.SourceBackfill,
			RuleVersion: rule.Version, TriggerSeq: t.Seq, EventID: e.GetEventId(),
		}, Events: []*eventv1.Envelope{e}})
	}
	prog.ConversationsScanned += uint64(len(convs))
	mk := func(a store.Applied) *eventv1.Envelope {
		return derive.TagRemoved(rule.TenantID, a.ConversationID, a.EventID, rule.RuleID, a.Tag, eventv1.TagSource_TAG_SOURCE_BACKFILL, runID, now)
	}
	for len(apps) > 0 || len(removals) > 0 {
		na, nr := min(len(apps), chunkSize), min(len(removals), chunkSize)
		applied, removed, err := b.cfg.Store.BackfillChunk(ctx, rule.TenantID, rule.RuleID, rule.Version, apps[:na], removals[:nr], lastSeq, mk)
		if err != nil {
			return err
		}
		apps, removals = apps[na:], removals[nr:]
		prog.TagsApplied += uint64(applied)
		prog.TagsRemoved += uint64(removed)
		if applied+removed > 0 {
			b.cfg.Kick()
		}
	}
	return nil
}
