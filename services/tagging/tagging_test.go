package tagging_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/libs/testsvc"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

type fixture struct {
	t      testing.TB
	client taggingv1.TaggingServiceClient
	keys   map[string]string
	bus    *eventbus.Bus
	js     jetstream.JetStream
	pool   *pgxpool.Pool
	// cfg is the running service's configuration; admin its admin address.
	cfg   tagging.Config
	admin string
	// stop stops the service (idempotent).
	stop func()
}

// start runs tagging against a fresh JetStream and database with tenants
// acme and globex, and an event bus that publishes as ingest.
func start(t testing.TB, opts ...func(*tagging.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	n := testenv.NATS(t)
	pgURL := testenv.Postgres(t)
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f := &fixture{t: t, keys: testsvc.Tenants(t, pgURL, []string{grpcx.ScopeAdmin}, "acme", "globex"), pool: pool}
	grpcAddr, adminAddr := testsvc.Addrs(t)
	cfg := tagging.Config{
		Config: service.Config{Server: config.Server{ShutdownTimeout: 5 * time.Second}, NATS: config.NATS{URL: n.URL, Replicas: 1, DuplicateWindow: time.Minute},
			Postgres: config.Postgres{URL: pgURL, MaxConns: 6}, GRPCAddr: grpcAddr, AdminAddr: adminAddr,
			Telemetry: testenv.Telemetry(t, "tagging")},
	}
	for _, o := range opts {
		o(&cfg)
	}
	f.cfg, f.admin, f.stop = cfg, cfg.AdminAddr, runService(t, cfg)
	conn := testsvc.Dial(t, cfg.GRPCAddr)
	f.client = taggingv1.NewTaggingServiceClient(conn)
	if f.bus, err = eventbus.Connect(ctx, n.URL, "test-ingest", eventbus.Options{Producer: "ingest"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.bus.Close() })
	f.js = f.bus.JetStream()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := f.client.ListRules(f.ctx("acme"), &taggingv1.ListRulesRequest{})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tagging not serving: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f
}

// runService runs tagging until the test ends or the returned stop is
// called; an error from it fails the test.
func runService(t testing.TB, cfg tagging.Config) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tagging.Run(ctx, cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("tagging: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (f *fixture) ctx(tenant string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+f.keys[tenant])
}

func (f *fixture) publish(envs ...*eventv1.Envelope) {
	f.t.Helper()
	for _, e := range envs {
		if _, err := f.bus.Publish(context.Background(), proto.Clone(e).(*eventv1.Envelope)); err != nil {
			f.t.Fatal(err)
		}
	}
}

// storeAgain stores a second copy of each event under a new Nats-Msg-Id, as
// a client retry after the duplicate window would.
func (f *fixture) storeAgain(envs ...*eventv1.Envelope) {
	f.t.Helper()
	for _, e := range envs {
		data, _ := proto.Marshal(e)
		msg := nats.NewMsg(eventbus.ConvSubject(e.TenantId, e.ConversationId, eventbus.Kind(e)))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, "retry-"+e.EventId)
		if _, err := f.js.PublishMsg(context.Background(), msg); err != nil {
			f.t.Fatal(err)
		}
	}
}

// settle waits until live tagging has applied every event in the stream and
// its outbox is empty (including the events it appended itself).
func (f *fixture) settle() {
	f.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, err := f.js.Stream(ctx, eventbus.ConvStream)
		if err != nil {
			f.t.Fatal(err)
		}
		last := s.CachedInfo().State.LastSeq
		// The partitions' positions first, then the outbox: a batch
		// committed by then has committed its outbox rows, so they are
		// counted.
		pos, err := partition.Positions(ctx, f.pool, "tagging", partition.DefaultPartitions)
		if err != nil {
			f.t.Fatal(err)
		}
		caught := true
		for _, p := range pos {
			caught = caught && p >= last
		}
		var pending int
		if err := f.pool.QueryRow(ctx, `SELECT count(*) FROM tagging_outbox`).Scan(&pending); err != nil {
			f.t.Fatal(err)
		}
		if caught && pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("tagging did not catch up with the stream (last seq %d, outbox %d)", last, pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// events returns the tenant's events appended by tagging, in stream order.
func (f *fixture) events(tenant string) []*eventv1.Envelope {
	f.t.Helper()
	ctx := context.Background()
	s, err := f.js.Stream(ctx, eventbus.ConvStream)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []*eventv1.Envelope
	for seq := uint64(1); seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			f.t.Fatal(err)
		}
		env := &eventv1.Envelope{}
		if err := proto.Unmarshal(m.Data, env); err != nil {
			f.t.Fatal(err)
		}
		if env.TenantId == tenant && env.Producer == "tagging" {
			out = append(out, env)
		}
	}
	return out
}

// summary renders tagging events as "conv kind detail" lines.
func summary(envs []*eventv1.Envelope) []string {
	var out []string
	for _, e := range envs {
		var d string
		switch p := e.Payload.(type) {
		case *eventv1.Envelope_TagApplied:
			d = p.TagApplied.Tag + " " + strings.TrimPrefix(p.TagApplied.Source.String(), "TAG_SOURCE_")
		case *eventv1.Envelope_TagRemoved:
			d = p.TagRemoved.Tag + " " + strings.TrimPrefix(p.TagRemoved.Source.String(), "TAG_SOURCE_")
		case *eventv1.Envelope_IssueDetected:
			d = p.IssueDetected.Issue
		case *eventv1.Envelope_LabelAdded:
			d = p.LabelAdded.Label + " by " + p.LabelAdded.AddedBy
		case *eventv1.Envelope_LabelRemoved:
			d = p.LabelRemoved.Label + " by " + p.LabelRemoved.RemovedBy
		case *eventv1.Envelope_Flagged:
			d = p.Flagged.FlaggedBy + ": " + p.Flagged.Note
		case *eventv1.Envelope_Unflagged:
			d = p.Unflagged.UnflaggedBy + ": " + p.Unflagged.Note
		}
		out = append(out, e.ConversationId+" "+e.Kind+" "+d)
	}
	return out
}

func sorted(s []string) []string { s = slices.Clone(s); slices.Sort(s); return s }

func assertEvents(t testing.TB, got []*eventv1.Envelope, want ...string) {
	t.Helper()
	if g := sorted(summary(got)); !slices.Equal(g, sorted(want)) {
		t.Fatalf("tagging events:\n got  %q\n want %q", g, sorted(want))
	}
}

func (f *fixture) createRule(tenant, id, expr, tag string) *taggingv1.Rule {
	f.t.Helper()
	r, err := f.client.CreateRule(f.ctx(tenant), &taggingv1.CreateRuleRequest{Rule: &taggingv1.Rule{RuleId: id, Name: id, Expression: expr, Tag: tag}})
	if err != nil {
		f.t.Fatalf("CreateRule %s: %v", id, err)
	}
	return r
}

func (f *fixture) backfill(tenant, ruleID string) (*taggingv1.BackfillProgress, []*taggingv1.BackfillProgress) {
	f.t.Helper()
	st, err := f.client.Backfill(f.ctx(tenant), &taggingv1.BackfillRequest{RuleId: ruleID})
	if err != nil {
		f.t.Fatal(err)
	}
	var all []*taggingv1.BackfillProgress
	for {
		p, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			f.t.Fatalf("Backfill %s: %v", ruleID, err)
		}
		all = append(all, p)
	}
	if len(all) == 0 || !all[len(all)-1].Done {
		f.t.Fatalf("backfill did not report done: %v", all)
	}
	for i := 1; i < len(all); i++ {
		if all[i].EventsScanned < all[i-1].EventsScanned || all[i].ConversationsScanned < all[i-1].ConversationsScanned {
			f.t.Fatalf("progress went backwards: %v", all)
		}
	}
	f.settle()
	return all[len(all)-1], all
}

func assertCode(t testing.TB, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("want %v, got %v", code, err)
	}
}

func assertField(t testing.TB, err error, field, contains string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("want InvalidArgument on %s, got %v", field, err)
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) == 1 && br.FieldViolations[0].Field == field &&
			strings.Contains(br.FieldViolations[0].Description, contains) {
			return
		}
	}
	t.Fatalf("want a field violation on %s containing %q, got %v", field, contains, st.Details())
}

const refundExpr = `conversation.messages.exists(m, m.role == "visitor" && m.text.matches("(?i)refund"))`

// TestLiveTaggingAppliesOnce: a rule's tag and a detector's issue are applied
// once, even when the same events are published again (JetStream drops
// them) or stored twice (a retry after the duplicate window).
func TestLiveTaggingAppliesOnce(t *testing.T) {
	f := start(t)
	rule := f.createRule("acme", "refunds", refundExpr, "refund")
	if rule.Version != 1 || !rule.Enabled {
		t.Fatalf("created rule: %v", rule)
	}
	c1, c2 := evtest.New("acme", "c1"), evtest.New("acme", "c2")
	evs := []*eventv1.Envelope{
		c1.Started("support"), c1.Visitor("I want a refund"), c1.Fallback("Sorry, I did not get that."),
		c1.Visitor("REFUND please"), c1.Fallback("Sorry?"),
		c2.Started("support"), c2.Visitor("where is my order"), c2.Bot("On its way", 900),
	}
	f.publish(evs...)
	f.settle()
	want := []string{
		"c1 tag_applied refund RULE",
		"c1 issue_detected unidentified-response",
		"c1 tag_applied unidentified-response BUILTIN_DETECTOR",
	}
	assertEvents(t, f.events("acme"), want...)
	for _, e := range f.events("acme") {
		if e.GetTagApplied().GetSource() == eventv1.TagSource_TAG_SOURCE_RULE && (e.GetTagApplied().GetRuleId() != "refunds" || e.CausationId != evs[1].EventId) {
			t.Fatalf("TagApplied should name the rule and the triggering event: %v", e)
		}
	}

	f.publish(evs...)    // duplicates within the window: dropped by JetStream
	f.storeAgain(evs...) // stored twice: redelivered to tagging as new messages
	f.publish(c1.Visitor("refund refund refund"), c1.Fallback("Still no idea."))
	f.settle()
	assertEvents(t, f.events("acme"), want...)

	// TestRule sees the stored facts.
	res, err := f.client.TestRule(f.ctx("acme"), &taggingv1.TestRuleRequest{ConversationId: "c1", Expression: "conversation.unidentified_count >= 3"})
	if err != nil || !res.Matched || res.Conversation.GetBotId() != "support" {
		t.Fatalf("TestRule: %v %v", res, err)
	}
	res, err = f.client.TestRule(f.ctx("acme"), &taggingv1.TestRuleRequest{ConversationId: "c2", Expression: `conversation.variables.plan == "pro"`})
	if err != nil || res.Matched || !strings.Contains(res.EvaluationError, "no such key") {
		t.Fatalf("TestRule with a missing key: %v %v", res, err)
	}
	_, err = f.client.TestRule(f.ctx("acme"), &taggingv1.TestRuleRequest{ConversationId: "nope", Expression: "true"})
	assertCode(t, err, codes.NotFound)
}

func TestInvalidRulesAreRefused(t *testing.T) {
	f := start(t)
	create := func(r *taggingv1.Rule) error {
		_, err := f.client.CreateRule(f.ctx("acme"), &taggingv1.CreateRuleRequest{Rule: r})
		return err
	}
	assertField(t, create(&taggingv1.Rule{Name: "x", Tag: "x", Expression: "conversation.unidentifed_count > 2"}), "rule.expression", "1:13: undefined field 'unidentifed_count'")
	assertField(t, create(&taggingv1.Rule{Name: "x", Tag: "x", Expression: `event.text.matches("(")`}), "rule.expression", "1:20: invalid regular expression")
	assertField(t, create(&taggingv1.Rule{Name: "x", Tag: "x", Expression: "conversation.bot_id"}), "rule.expression", "must evaluate to a bool")
	assertField(t, create(&taggingv1.Rule{Name: "x", Tag: "Not OK!", Expression: "true"}), "rule.tag", "a-z")
	assertField(t, create(&taggingv1.Rule{Name: "", Tag: "x", Expression: "true"}), "rule.name", "required")
	assertField(t, create(&taggingv1.Rule{RuleId: "has space", Name: "x", Tag: "x", Expression: "true"}), "rule.rule_id", "A-Z")
	_, err := f.client.TestRule(f.ctx("acme"), &taggingv1.TestRuleRequest{ConversationId: "c1", Expression: "1 +"})
	assertField(t, err, "expression", "1:4: Syntax error")
	f.createRule("acme", "r1", "true", "everything")
	assertCode(t, create(&taggingv1.Rule{RuleId: "r1", Name: "again", Tag: "x", Expression: "true"}), codes.AlreadyExists)
	_, err = f.client.UpdateRule(f.ctx("acme"), &taggingv1.UpdateRuleRequest{Rule: &taggingv1.Rule{RuleId: "r1", Name: "x", Tag: "x", Expression: "nope"}})
	assertField(t, err, "rule.expression", "undeclared reference to 'nope'")
	_, err = f.client.UpdateRule(f.ctx("acme"), &taggingv1.UpdateRuleRequest{Rule: &taggingv1.Rule{RuleId: "r2", Name: "x", Tag: "x", Expression: "true"}})
	assertCode(t, err, codes.NotFound)
}

// TestLabelsAndFlags: labels (catalogue created on first use) and flags are
// commands appended as events, in the name of the caller's API key (the
// request's by is ignored).
func TestLabelsAndFlags(t *testing.T) {
	f := start(t)
	c := evtest.New("acme", "c1")
	f.publish(c.Started("support"))
	f.settle()
	ctx, keyID := f.newKey("acme", grpcx.ScopeAdmin)
	ctx2, key2ID := f.newKey("acme", grpcx.ScopeAdmin)
	ann, bob := "api-key:"+keyID, "api-key:"+key2ID
	added, err := f.client.AddLabel(ctx, &taggingv1.AddLabelRequest{ConversationId: "c1", Label: "VIP customer", By: "ann"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.AddLabel(ctx2, &taggingv1.AddLabelRequest{ConversationId: "c1", Label: "VIP customer", By: "bob"}); err != nil {
		t.Fatal(err)
	}
	labels, err := f.client.ListLabels(ctx, &taggingv1.ListLabelsRequest{})
	if err != nil || len(labels.Labels) != 1 || labels.Labels[0].Label != "VIP customer" || labels.Labels[0].CreatedBy != ann {
		t.Fatalf("catalogue: %v %v", labels, err)
	}
	_, err = f.client.RemoveLabel(ctx, &taggingv1.RemoveLabelRequest{ConversationId: "c1", Label: "unknown"})
	assertCode(t, err, codes.NotFound)
	if _, err := f.client.RemoveLabel(ctx, &taggingv1.RemoveLabelRequest{ConversationId: "c1", Label: "VIP customer", By: "ann"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Flag(ctx2, &taggingv1.FlagRequest{ConversationId: "c1", By: "bob", Note: "check the refund"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Unflag(ctx2, &taggingv1.UnflagRequest{ConversationId: "c1", By: "ann"}); err != nil {
		t.Fatal(err)
	}
	_, err = f.client.AddLabel(ctx, &taggingv1.AddLabelRequest{ConversationId: "c1", Label: ""})
	assertField(t, err, "label", "required")
	_, err = f.client.AddLabel(ctx, &taggingv1.AddLabelRequest{ConversationId: "c1", Label: "bad\x07bell"})
	assertField(t, err, "label", "control")
	_, err = f.client.AddLabel(ctx, &taggingv1.AddLabelRequest{ConversationId: "c1", Label: strings.Repeat("x", 65)})
	assertField(t, err, "label", "1-64")
	_, err = f.client.Flag(ctx, &taggingv1.FlagRequest{ConversationId: "no such.conv"})
	assertField(t, err, "conversation_id", "A-Z")
	_, err = f.client.Flag(ctx, &taggingv1.FlagRequest{ConversationId: "unknown"})
	assertCode(t, err, codes.NotFound)
	// Another tenant cannot label acme's conversation: it does not exist there.
	_, err = f.client.AddLabel(f.ctx("globex"), &taggingv1.AddLabelRequest{ConversationId: "c1", Label: "x"})
	assertCode(t, err, codes.NotFound)

	f.settle()
	got := f.events("acme")
	assertEvents(t, got,
		"c1 label_added VIP customer by "+ann, "c1 label_added VIP customer by "+bob, "c1 label_removed VIP customer by "+ann,
		"c1 flagged "+bob+": check the refund", "c1 unflagged "+bob+": ")
	if got[0].EventId != added.EventId || got[0].Producer != "tagging" {
		t.Fatalf("LabelAdded: %v, response id %s", got[0], added.EventId)
	}
	if len(f.events("globex")) != 0 {
		t.Fatal("globex got events")
	}
}

// TestBackfillOverHistory: a rule created after the fact tags past
// conversations; changing it and backfilling again applies and removes
// exactly what changed; a second run changes nothing.
func TestBackfillOverHistory(t *testing.T) {
	f := start(t)
	var history []*eventv1.Envelope
	for i, text := range []string{"I want a refund", "give me my money back", "where is my order", "refund!"} {
		c := evtest.New("acme", fmt.Sprintf("h%d", i+1))
		history = append(history, c.Started("support"), c.Visitor(text), c.Bot("ok", 300))
	}
	// Interleave conversations, as the log does.
	slices.SortStableFunc(history, func(a, b *eventv1.Envelope) int { return a.OccurredAt.AsTime().Compare(b.OccurredAt.AsTime()) })
	f.publish(history...)
	f.publish(evtest.New("globex", "g1").Visitor("refund"))
	f.settle()
	if got := f.events("acme"); len(got) != 0 {
		t.Fatalf("no rule yet, but: %v", summary(got))
	}

	f.createRule("acme", "refunds", refundExpr, "refund")
	last, all := f.backfill("acme", "refunds")
	if last.ConversationsScanned != 4 || last.ConversationsMatched != 2 || last.TagsApplied != 2 || last.TagsRemoved != 0 || last.EventsScanned != 12 || last.RuleVersion != 1 {
		t.Fatalf("first backfill: %v", all)
	}
	assertEvents(t, f.events("acme"), "h1 tag_applied refund BACKFILL", "h4 tag_applied refund BACKFILL")
	if again, _ := f.backfill("acme", "refunds"); again.TagsApplied != 0 || again.TagsRemoved != 0 || again.ConversationsMatched != 2 {
		t.Fatalf("second backfill changed something: %v", again)
	}
	assertEvents(t, f.events("acme"), "h1 tag_applied refund BACKFILL", "h4 tag_applied refund BACKFILL")

	update := func(expr, tag string) {
		t.Helper()
		if _, err := f.client.UpdateRule(f.ctx("acme"), &taggingv1.UpdateRuleRequest{Rule: &taggingv1.Rule{RuleId: "refunds", Name: "refunds", Expression: expr, Tag: tag}}); err != nil {
			t.Fatal(err)
		}
	}
	// Wider: h2 gains the tag.
	update(`conversation.messages.exists(m, m.role == "visitor" && m.text.matches("(?i)refund|money back"))`, "refund")
	if p, _ := f.backfill("acme", "refunds"); p.TagsApplied != 1 || p.TagsRemoved != 0 || p.ConversationsMatched != 3 || p.RuleVersion != 2 {
		t.Fatalf("widened: %v", p)
	}
	// Narrower: h1 and h4 lose it.
	update(`conversation.messages.exists(m, m.role == "visitor" && m.text.contains("money back"))`, "refund")
	if p, _ := f.backfill("acme", "refunds"); p.TagsApplied != 0 || p.TagsRemoved != 2 || p.ConversationsMatched != 1 {
		t.Fatalf("narrowed: %v", p)
	}
	// Renamed tag: the old one goes, the new one comes.
	update(`conversation.messages.exists(m, m.role == "visitor" && m.text.contains("money back"))`, "money-back")
	if p, _ := f.backfill("acme", "refunds"); p.TagsApplied != 1 || p.TagsRemoved != 1 {
		t.Fatalf("renamed: %v", p)
	}
	if p, _ := f.backfill("acme", "refunds"); p.TagsApplied != 0 || p.TagsRemoved != 0 {
		t.Fatalf("final second run changed something: %v", p)
	}
	assertEvents(t, f.events("acme"),
		"h1 tag_applied refund BACKFILL", "h4 tag_applied refund BACKFILL", "h2 tag_applied refund BACKFILL",
		"h1 tag_removed refund BACKFILL", "h4 tag_removed refund BACKFILL",
		"h2 tag_removed refund BACKFILL", "h2 tag_applied money-back BACKFILL")
	if len(f.events("globex")) != 0 {
		t.Fatal("acme's backfill touched globex")
	}

	// Live tagging continues with the current version; a later backfill
	// keeps what live tagging applied.
	c := evtest.New("acme", "h5")
	f.publish(c.Visitor("money back now"))
	f.settle()
	if p, _ := f.backfill("acme", "refunds"); p.TagsApplied != 0 || p.TagsRemoved != 0 || p.ConversationsMatched != 2 {
		t.Fatalf("after live tagging: %v", p)
	}
}

// TestBackfillSplitsLargeTenants: with a memory bound below the tenant's
// conversation count, the replay is partitioned and gives the same result.
func TestBackfillSplitsLargeTenants(t *testing.T) {
	f := start(t, func(c *tagging.Config) { c.BackfillMaxConversations = 3 })
	for i := range 10 {
		c := evtest.New("acme", fmt.Sprintf("p%d", i))
		text := "hello"
		if i%2 == 0 {
			text = "refund"
		}
		f.publish(c.Visitor(text))
	}
	f.settle()
	f.createRule("acme", "refunds", refundExpr, "refund")
	p, all := f.backfill("acme", "refunds")
	if p.ConversationsScanned != 10 || p.TagsApplied != 5 || p.EventsScanned <= 10 {
		t.Fatalf("partitioned backfill: %v", all)
	}
	if again, _ := f.backfill("acme", "refunds"); again.TagsApplied != 0 || again.TagsRemoved != 0 {
		t.Fatalf("second run: %v", again)
	}
}

// TestRuleLifecycle: disabling stops live tagging and refuses backfill;
// deleting removes the rule's tags.
func TestRuleLifecycle(t *testing.T) {
	f := start(t)
	f.createRule("acme", "refunds", refundExpr, "refund")
	f.createRule("acme", "refunds-too", `event.text.contains("refund")`, "refund")
	c1 := evtest.New("acme", "c1")
	f.publish(c1.Visitor("refund"))
	f.settle()
	assertEvents(t, f.events("acme"), "c1 tag_applied refund RULE", "c1 tag_applied refund RULE")

	r, err := f.client.SetRuleEnabled(f.ctx("acme"), &taggingv1.SetRuleEnabledRequest{RuleId: "refunds", Enabled: false})
	if err != nil || r.Enabled || r.Version != 2 {
		t.Fatalf("disable: %v %v", r, err)
	}
	_, err = f.client.SetRuleEnabled(f.ctx("acme"), &taggingv1.SetRuleEnabledRequest{RuleId: "nope"})
	assertCode(t, err, codes.NotFound)
	st, err := f.client.Backfill(f.ctx("acme"), &taggingv1.BackfillRequest{RuleId: "refunds"})
	if err == nil {
		_, err = st.Recv()
	}
	assertCode(t, err, codes.FailedPrecondition)
	c2 := evtest.New("acme", "c2")
	f.publish(c2.Visitor("a refund, please"))
	f.settle()
	assertEvents(t, f.events("acme"), "c1 tag_applied refund RULE", "c1 tag_applied refund RULE", "c2 tag_applied refund RULE")

	// Deleting refunds-too: c2 loses the tag (no other holder); c1 keeps it
	// (the disabled rule refunds still holds it), so no event for c1.
	if _, err := f.client.DeleteRule(f.ctx("acme"), &taggingv1.DeleteRuleRequest{RuleId: "refunds-too"}); err != nil {
		t.Fatal(err)
	}
	f.settle()
	assertEvents(t, f.events("acme"), "c1 tag_applied refund RULE", "c1 tag_applied refund RULE", "c2 tag_applied refund RULE", "c2 tag_removed refund RULE")
	_, err = f.client.DeleteRule(f.ctx("acme"), &taggingv1.DeleteRuleRequest{RuleId: "refunds-too"})
	assertCode(t, err, codes.NotFound)
	list, err := f.client.ListRules(f.ctx("acme"), &taggingv1.ListRulesRequest{})
	if err != nil || len(list.Rules) != 1 || list.Rules[0].RuleId != "refunds" {
		t.Fatalf("ListRules: %v %v", list, err)
	}
}

// TestTenantIsolation: one tenant's rules never tag another tenant's
// conversations, and a tenant cannot see or change another's rules.
func TestTenantIsolation(t *testing.T) {
	f := start(t)
	f.createRule("acme", "refunds", refundExpr, "refund")
	f.createRule("globex", "everything", "true", "globex-all")
	a, g := evtest.New("acme", "shared-id"), evtest.New("globex", "shared-id")
	f.publish(a.Visitor("refund please"), g.Visitor("refund please"), evtest.New("acme", "a2").Visitor("hi"))
	f.settle()
	assertEvents(t, f.events("acme"), "shared-id tag_applied refund RULE")
	assertEvents(t, f.events("globex"), "shared-id tag_applied globex-all RULE")

	gctx := f.ctx("globex")
	_, err := f.client.UpdateRule(gctx, &taggingv1.UpdateRuleRequest{Rule: &taggingv1.Rule{RuleId: "refunds", Name: "x", Tag: "x", Expression: "true"}})
	assertCode(t, err, codes.NotFound)
	_, err = f.client.SetRuleEnabled(gctx, &taggingv1.SetRuleEnabledRequest{RuleId: "refunds"})
	assertCode(t, err, codes.NotFound)
	_, err = f.client.DeleteRule(gctx, &taggingv1.DeleteRuleRequest{RuleId: "refunds"})
	assertCode(t, err, codes.NotFound)
	st, err := f.client.Backfill(gctx, &taggingv1.BackfillRequest{RuleId: "refunds"})
	if err == nil {
		_, err = st.Recv()
	}
	assertCode(t, err, codes.NotFound)
	_, err = f.client.TestRule(gctx, &taggingv1.TestRuleRequest{ConversationId: "a2", Expression: "true"})
	assertCode(t, err, codes.NotFound)
	list, err := f.client.ListRules(gctx, &taggingv1.ListRulesRequest{})
	if err != nil || len(list.Rules) != 1 || list.Rules[0].RuleId != "everything" {
		t.Fatalf("globex sees: %v %v", list, err)
	}
	// The same rule id in another tenant is another rule.
	f.createRule("globex", "refunds", "true", "mine")
	if p, _ := f.backfill("globex", "everything"); p.ConversationsScanned != 1 || p.TagsApplied != 0 {
		t.Fatalf("globex backfill scanned acme's history: %v", p)
	}
	if p, _ := f.backfill("globex", "refunds"); p.ConversationsScanned != 1 || p.TagsApplied != 1 {
		t.Fatalf("globex refunds backfill: %v", p)
	}
	assertEvents(t, f.events("acme"), "shared-id tag_applied refund RULE")
}

// TestDetectorSettings: detectors are tunable per tenant.
func TestDetectorSettings(t *testing.T) {
	f := start(t, func(c *tagging.Config) { c.LongWait = 10 * time.Second })
	ctx := f.ctx("acme")
	ds, err := f.client.GetDetectors(ctx, &taggingv1.GetDetectorsRequest{})
	if err != nil || ds.LongWaitMs != 10_000 || ds.RepeatWindow != 5 || len(ds.Disabled) != 0 || !slices.Contains(ds.NegativePhrases, "useless") {
		t.Fatalf("defaults: %v %v", ds, err)
	}
	ds, err = f.client.UpdateDetectors(ctx, &taggingv1.UpdateDetectorsRequest{Settings: &taggingv1.DetectorSettings{Disabled: []string{"unidentified-response"}, LongWaitMs: 60_000}})
	if err != nil || ds.LongWaitMs != 60_000 || ds.RepeatWindow != 5 || !slices.Equal(ds.Disabled, []string{"unidentified-response"}) {
		t.Fatalf("update: %v %v", ds, err)
	}
	_, err = f.client.UpdateDetectors(ctx, &taggingv1.UpdateDetectorsRequest{Settings: &taggingv1.DetectorSettings{Disabled: []string{"nope"}}})
	assertField(t, err, "settings.disabled", "unknown detector")

	a, g := evtest.New("acme", "c1"), evtest.New("globex", "c1")
	f.publish(a.Fallback("??"), a.Bot("slow", 30_000), a.Visitor("this is useless"),
		g.Fallback("??"), g.Bot("slow", 30_000))
	f.settle()
	assertEvents(t, f.events("acme"),
		"c1 issue_detected negative-feedback", "c1 tag_applied negative-feedback BUILTIN_DETECTOR")
	assertEvents(t, f.events("globex"),
		"c1 issue_detected unidentified-response", "c1 tag_applied unidentified-response BUILTIN_DETECTOR",
		"c1 issue_detected long-wait", "c1 tag_applied long-wait BUILTIN_DETECTOR")
}

// TestBackfillWhileLiveTaggingContinues: events keep arriving (for old and
// new conversations) while a backfill runs; every matching conversation ends
// up tagged exactly once, nothing is removed, and a second backfill changes
// nothing.
func TestBackfillWhileLiveTaggingContinues(t *testing.T) {
	f := start(t, func(c *tagging.Config) { c.ConsumerBatch = 20 })
	convs := make([]*evtest.Conv, 120)
	for i := range convs {
		convs[i] = evtest.New("acme", fmt.Sprintf("k%d", i))
	}
	text := func(i, round int) string {
		if (i+round)%3 == 0 {
			return fmt.Sprintf("refund %d", round)
		}
		return fmt.Sprintf("hello %d", round)
	}
	for i, c := range convs {
		f.publish(c.Visitor(text(i, 0)))
	}
	f.settle()
	f.createRule("acme", "refunds", refundExpr, "refund")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for round := 1; round <= 3; round++ {
			for i, c := range convs {
				if _, err := f.bus.Publish(context.Background(), c.Visitor(text(i, round))); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	f.backfill("acme", "refunds")
	<-done
	f.settle()
	if p, _ := f.backfill("acme", "refunds"); p.TagsApplied != 0 || p.TagsRemoved != 0 || p.ConversationsMatched != 120 {
		t.Fatalf("second backfill: %v", p)
	}
	applied := map[string]int{}
	for _, e := range f.events("acme") {
		if e.GetTagRemoved() != nil {
			t.Fatalf("a tag was removed: %v", e)
		}
		if ta := e.GetTagApplied(); ta != nil && ta.Tag == "refund" {
			applied[e.ConversationId]++
		}
	}
	for _, c := range convs {
		if applied[c.ID] != 1 {
			t.Fatalf("%s tagged %d times", c.ID, applied[c.ID])
		}
	}
}
