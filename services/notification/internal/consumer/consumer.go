// Package consumer is notification's partitioned consumer of PARLEY_CONV
// (libs/partition): it folds every event into its conversation's facts
// (libs/facts, the tagging rules' `conversation`), selects the tenant's
// active subscriptions by event kind and CEL condition, and records one
// delivery per (subscription, event) with the payload, the facts and the
// partition position in one PostgreSQL transaction.
package consumer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/rules"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/notification/internal/store"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Name is the consumer's name in libs/partition.
const Name = "notification"

// Matcher decides which subscriptions an event goes to. It caches each
// subscription's compiled condition; it is safe for concurrent use.
type Matcher struct {
	engine *rules.Engine
	log    *slog.Logger

	mu       sync.Mutex
	programs map[string]compiled
}

type compiled struct {
	updated time.Time
	prg     *rules.Program
}

// NewMatcher returns a matcher compiling conditions with engine.
func NewMatcher(engine *rules.Engine, log *slog.Logger) *Matcher {
	return &Matcher{engine: engine, log: log, programs: map[string]compiled{}}
}

// Selector is what selects events: a subscription or an alert rule.
type Selector struct {
	// ID and Version name the compiled condition in the cache.
	ID        string
	Version   time.Time
	Kinds     []string
	Condition string
}

// Matches reports whether sel selects an event of kind with the event and
// conversation as rules see them. A condition that fails to evaluate does
// not match.
func (m *Matcher) Matches(ctx context.Context, sel Selector, kind string, in func() rules.Input) bool {
	if len(sel.Kinds) > 0 && !slices.Contains(sel.Kinds, kind) {
		return false
	}
	if sel.Condition == "" {
		return true
	}
	prg := m.program(sel)
	if prg == nil {
		return false
	}
	ok, err := prg.Eval(ctx, in())
	return err == nil && ok
}

func (m *Matcher) program(sel Selector) *rules.Program {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.programs[sel.ID]; ok && c.updated.Equal(sel.Version) {
		return c.prg
	}
	prg, err := m.engine.Compile(sel.Condition)
	if err != nil {
		// Checked when saved; only a change of the dialect gets here.
		m.log.Warn("condition does not compile; it matches nothing", "id", sel.ID, "err", err)
	}
	m.programs[sel.ID] = compiled{updated: sel.Version, prg: prg}
	return prg
}

func subSelector(s *store.Subscription) Selector {
	return Selector{ID: s.ID, Version: s.UpdatedAt, Kinds: s.EventKinds, Condition: s.Condition}
}

func ruleSelector(a *store.AlertRule) Selector {
	return Selector{ID: a.ID, Version: a.CreatedAt, Kinds: []string{a.EventKind}, Condition: a.Condition}
}

// DeliveryID is the stable id (the webhook-id) of an event's delivery to a
// subscription: the same on every redelivery and replay.
func DeliveryID(tenant, sub, eventID string) string {
	h := sha256.Sum256([]byte(tenant + "\x00" + sub + "\x00" + eventID))
	return "msg_" + hex.EncodeToString(h[:16])
}

var marshal = protojson.MarshalOptions{UseProtoNames: true}

// Payload is a webhook's body: the Standard Webhooks envelope with the event
// (protojson) and the conversation's facts after it.
func Payload(env *eventv1.Envelope, conv *taggingv1.RuleConversation) ([]byte, error) {
	ev, err := marshal.Marshal(env)
	if err != nil {
		return nil, err
	}
	data := map[string]json.RawMessage{"event": ev}
	if conv != nil {
		c, err := marshal.Marshal(conv)
		if err != nil {
			return nil, err
		}
		data["conversation"] = c
	}
	at := env.GetRecordedAt()
	if at == nil {
		at = env.GetOccurredAt()
	}
	return json.Marshal(map[string]any{"type": eventbus.Kind(env), "timestamp": at.AsTime().UTC().Format(time.RFC3339Nano), "data": data})
}

// Folder folds events into facts and builds the deliveries they cause.
type Folder struct {
	Matcher  *Matcher
	Facts    facts.Options
	RetryFor time.Duration
	// AlertStep is the alert counts' bucket size.
	AlertStep time.Duration
}

// count adds the event to the buckets of the alert rules it matches.
func (f *Folder) count(ctx context.Context, alertRules []*store.AlertRule, env *eventv1.Envelope, in func() rules.Input, counts map[store.CountKey]store.Amount) {
	kind := eventbus.Kind(env)
	at := env.GetRecordedAt().AsTime()
	for _, a := range alertRules {
		if a.TenantID != env.GetTenantId() {
			continue
		}
		add, ok := measure(a, env)
		if !ok || !f.Matcher.Matches(ctx, ruleSelector(a), kind, in) {
			continue
		}
		k := store.CountKey{AlertID: a.ID, Bucket: at.Truncate(f.AlertStep)}
		sum := counts[k]
		sum.Count, sum.Value = sum.Count+add.Count, sum.Value+add.Value
		counts[k] = sum
	}
}

// measure is what one event adds to a rule's bucket, if anything: a count,
// a bot message (and whether it went unidentified), or a usage cost in the
// rule's currency.
func measure(a *store.AlertRule, env *eventv1.Envelope) (store.Amount, bool) {
	switch a.Metric {
	case store.MetricUnidentifiedRate:
		m := env.GetMessagePosted()
		if m == nil || m.GetRole() != eventv1.Role_ROLE_BOT {
			return store.Amount{}, false
		}
		if m.GetUnidentified() {
			return store.Amount{Count: 1, Value: 1}, true
		}
		return store.Amount{Count: 1}, true
	case store.MetricCostPerDay:
		u := env.GetUsageRecorded()
		cur := u.GetCurrency()
		if cur == "" {
			cur = "USD"
		}
		if u == nil || !strings.EqualFold(cur, a.Currency) {
			return store.Amount{}, false
		}
		return store.Amount{Count: 1, Value: u.GetCostMicros()}, true
	}
	if a.IssueKind != "" && env.GetIssueDetected().GetIssue() != a.IssueKind {
		return store.Amount{}, false
	}
	return store.Amount{Count: 1}, true
}

// Deliveries returns the deliveries of one event (already folded into
// conv) to the given subscriptions of its tenant.
func (f *Folder) Deliveries(ctx context.Context, subs []*store.Subscription, env *eventv1.Envelope, seq uint64,
	conv *taggingv1.RuleConversation, ev *taggingv1.RuleEvent, now time.Time) ([]store.Delivery, error) {
	return f.deliveries(ctx, subs, env, seq, conv, lazyInput(conv, ev), now)
}

// lazyInput builds the rules' input on first use.
func lazyInput(conv *taggingv1.RuleConversation, ev *taggingv1.RuleEvent) func() rules.Input {
	var in *rules.Input
	return func() rules.Input {
		if in == nil {
			i := rules.NewInput(conv, ev)
			in = &i
		}
		return *in
	}
}

func (f *Folder) deliveries(ctx context.Context, subs []*store.Subscription, env *eventv1.Envelope, seq uint64,
	conv *taggingv1.RuleConversation, input func() rules.Input, now time.Time) ([]store.Delivery, error) {
	kind := eventbus.Kind(env)
	var out []store.Delivery
	var payload []byte
	for _, s := range subs {
		if s.TenantID != env.GetTenantId() || !f.Matcher.Matches(ctx, subSelector(s), kind, input) {
			continue
		}
		if payload == nil {
			var err error
			if payload, err = Payload(env, conv); err != nil {
				return nil, eventbus.Permanent(fmt.Errorf("payload: %w", err))
			}
		}
		out = append(out, store.Delivery{TenantID: s.TenantID, ID: DeliveryID(s.TenantID, s.ID, env.GetEventId()), SubscriptionID: s.ID,
			Kind: s.Kind, EventID: env.GetEventId(), EventKind: kind, Conversation: env.GetConversationId(), StreamSeq: seq,
			Payload: payload, Recipients: s.Emails, ExpiresAt: now.Add(f.RetryFor)})
	}
	return out, nil
}

// Consumer is the partition handler.
type Consumer struct {
	pool   *pgxpool.Pool
	folder *Folder
	kick   func()
	now    func() time.Time
}

// New returns the consumer; kick is called after deliveries were recorded.
func New(pool *pgxpool.Pool, folder *Folder, kick func()) *Consumer {
	return &Consumer{pool: pool, folder: folder, kick: kick, now: time.Now}
}

// Handle applies a batch in one transaction with its position.
func (c *Consumer) Handle(ctx context.Context, b partition.Batch) error {
	var keys []store.ConvKey
	tenants := map[string]bool{}
	seen := map[store.ConvKey]bool{}
	for _, d := range b.Deliveries {
		k := store.ConvKey{Tenant: d.Envelope.GetTenantId(), Conversation: d.Envelope.GetConversationId()}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
		tenants[k.Tenant] = true
	}
	n := 0
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		stored, err := store.LoadFacts(ctx, tx, keys)
		if err != nil {
			return err
		}
		subs, err := store.ActiveSubscriptions(ctx, tx, mapKeys(tenants))
		if err != nil {
			return err
		}
		alertRules, err := store.TenantsAlertRules(ctx, tx, mapKeys(tenants))
		if err != nil {
			return err
		}
		counts := map[store.CountKey]store.Amount{}
		states := map[store.ConvKey]*taggingv1.RuleConversation{}
		for _, k := range keys {
			st := &taggingv1.RuleConversation{}
			if blob, ok := stored[k]; ok {
				if err := proto.Unmarshal(blob, st); err != nil {
					return eventbus.Permanent(fmt.Errorf("stored facts of %s/%s: %w", k.Tenant, k.Conversation, err))
				}
			}
			states[k] = st
		}
		var ds []store.Delivery
		now := c.now()
		for _, d := range b.Deliveries {
			env := d.Envelope
			k := store.ConvKey{Tenant: env.GetTenantId(), Conversation: env.GetConversationId()}
			ev, _ := facts.Apply(states[k], env, c.folder.Facts)
			in := lazyInput(states[k], ev)
			out, err := c.folder.deliveries(ctx, subs, env, d.StreamSeq, states[k], in, now)
			if err != nil {
				return err
			}
			ds = append(ds, out...)
			c.folder.count(ctx, alertRules, env, in, counts)
		}
		blobs := make(map[store.ConvKey][]byte, len(states))
		for k, st := range states {
			if blobs[k], err = proto.Marshal(st); err != nil {
				return err
			}
		}
		if err := store.SaveFacts(ctx, tx, blobs); err != nil {
			return err
		}
		if err := store.AddCounts(ctx, tx, counts); err != nil {
			return err
		}
		if n, err = store.Enqueue(ctx, tx, ds, false); err != nil {
			return err
		}
		return partition.Commit(ctx, tx, b.Lease, b.Last())
	})
	if err == nil && n > 0 && c.kick != nil {
		c.kick()
	}
	return err
}

func mapKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
