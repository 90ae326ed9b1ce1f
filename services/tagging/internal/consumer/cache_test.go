package consumer_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/rules"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/tagging/internal/consumer"
	"github.com/parley-dev/parley/services/tagging/internal/derive"
	"github.com/parley-dev/parley/services/tagging/internal/store"
)

// TestKeptStatesFollowOtherConsumers: a consumer that kept conversation
// states from earlier batches uses what another consumer stored meanwhile
// (a replica that led while this one stood by), not its own copy.
func TestKeptStatesFollowOtherConsumers(t *testing.T) {
	ctx := context.Background()
	st, a := setup(t)
	e, err := rules.NewEngine(rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := consumer.New(consumer.Config{Store: st, Engine: e, Detectors: facts.DefaultSettings()})
	if _, err := st.CreateRule(ctx, store.Rule{TenantID: "acme", RuleID: "r1", Name: "r1", Tag: "three",
		Expression: "conversation.visitor_messages >= 3", Enabled: true}, 0); err != nil {
		t.Fatal(err)
	}
	cv := evtest.New("acme", "c1")
	envs := []*eventv1.Envelope{cv.Visitor("one"), cv.Visitor("two"), cv.Visitor("three"), cv.Visitor("four")}
	if err := a.Apply(ctx, deliveries(1, envs[0])); err != nil {
		t.Fatal(err)
	}
	// b applies events 2 and 3 (and tags the conversation); a's copy is
	// behind.
	if err := b.Apply(ctx, deliveries(2, envs[1], envs[2])); err != nil {
		t.Fatal(err)
	}
	// a is handed 2 again (redelivered) and 4.
	if err := a.Apply(ctx, []*eventbus.Delivery{{Envelope: envs[1], StreamSeq: 2}, {Envelope: envs[3], StreamSeq: 4}}); err != nil {
		t.Fatal(err)
	}
	s, err := st.ConversationState(ctx, "acme", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if s.AppliedSeq != 4 || s.Facts.VisitorMessages != 4 || s.Facts.Events != 4 || len(s.Facts.Messages) != 4 {
		t.Fatalf("state: seq %d, %d visitor messages, %d events, %d kept", s.AppliedSeq, s.Facts.VisitorMessages, s.Facts.Events, len(s.Facts.Messages))
	}
	if got := outbox(t, st); !slices.Equal(got, []string{"c1:tag_applied:three"}) {
		t.Fatalf("outbox: %v", got)
	}
}

// TestKeptTagsFollowRuleDeletion: tags removed by another transaction
// (deleting a rule; backfill likewise) are seen by the consumer that kept
// the conversation: a rule created again under the same id tags the
// conversation again.
func TestKeptTagsFollowRuleDeletion(t *testing.T) {
	ctx := context.Background()
	st, c := setup(t)
	rule := store.Rule{TenantID: "acme", RuleID: "r1", Name: "r1", Tag: "refund", Expression: `event.text.contains("refund")`, Enabled: true}
	if _, err := st.CreateRule(ctx, rule, 0); err != nil {
		t.Fatal(err)
	}
	cv := evtest.New("acme", "c1")
	if err := c.Apply(ctx, deliveries(1, cv.Visitor("refund please"))); err != nil {
		t.Fatal(err)
	}
	mk := func(a store.Applied) *eventv1.Envelope {
		return derive.TagRemoved("acme", a.ConversationID, a.EventID, "r1", a.Tag, eventv1.TagSource_TAG_SOURCE_RULE, "", time.Now())
	}
	if n, err := st.DeleteRule(ctx, "acme", "r1", mk); err != nil || n != 1 {
		t.Fatalf("delete: %d %v", n, err)
	}
	if _, err := st.CreateRule(ctx, rule, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, deliveries(2, cv.Visitor("my refund?"))); err != nil {
		t.Fatal(err)
	}
	want := []string{"c1:tag_applied:refund", "c1:tag_removed", "c1:tag_applied:refund"}
	if got := outbox(t, st); !slices.Equal(got, want) {
		t.Fatalf("outbox:\n got  %v\n want %v", got, want)
	}
}

// TestOwnEventsDoNotRewriteState: events that change nothing (tagging's
// own) leave the stored state as it is.
func TestOwnEventsDoNotRewriteState(t *testing.T) {
	ctx := context.Background()
	st, c := setup(t)
	cv := evtest.New("acme", "c1")
	if err := c.Apply(ctx, deliveries(1, cv.Visitor("hello"))); err != nil {
		t.Fatal(err)
	}
	own := cv.Event(&eventv1.TagApplied{Tag: "x", RuleId: "r"})
	if err := c.Apply(ctx, deliveries(2, own)); err != nil {
		t.Fatal(err)
	}
	s, err := st.ConversationState(ctx, "acme", "c1")
	if err != nil || s.AppliedSeq != 1 || s.Facts.Events != 1 {
		t.Fatalf("state: %+v %v", s, err)
	}
	// A conversation seen only through such events has no state.
	other := evtest.New("acme", "c2")
	if err := c.Apply(ctx, deliveries(3, other.Event(&eventv1.TagApplied{Tag: "x", RuleId: "r"}))); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ConversationState(ctx, "acme", "c2"); err != store.ErrNotFound {
		t.Fatalf("c2: %v", err)
	}
	// Redelivered, the own event is still a no-op; the next event applies.
	if err := c.Apply(ctx, []*eventbus.Delivery{{Envelope: own, StreamSeq: 2}, {Envelope: cv.Visitor("again"), StreamSeq: 4}}); err != nil {
		t.Fatal(err)
	}
	s, err = st.ConversationState(ctx, "acme", "c1")
	if err != nil || s.AppliedSeq != 4 || s.Facts.Events != 2 || s.LastEvent.GetText() != "again" {
		t.Fatalf("state: %+v %v", s, err)
	}
}

// TestKeptTagsFollowBackfill: a tag a backfill removed is seen as removed
// by the consumer that kept the conversation, which applies it again when
// the rule holds after a later event.
func TestKeptTagsFollowBackfill(t *testing.T) {
	ctx := context.Background()
	st, c := setup(t)
	if _, err := st.CreateRule(ctx, store.Rule{TenantID: "acme", RuleID: "r1", Name: "r1", Tag: "refund",
		Expression: `event.text.contains("refund")`, Enabled: true}, 0); err != nil {
		t.Fatal(err)
	}
	cv := evtest.New("acme", "c1")
	if err := c.Apply(ctx, deliveries(1, cv.Visitor("refund please"))); err != nil {
		t.Fatal(err)
	}
	mk := func(a store.Applied) *eventv1.Envelope {
		return derive.TagRemoved("acme", a.ConversationID, a.EventID, "r1", a.Tag, eventv1.TagSource_TAG_SOURCE_BACKFILL, "bf", time.Now())
	}
	_, removed, err := st.BackfillChunk(ctx, "acme", "r1", 1, nil, []store.Removal{{ConversationID: "c1", Tag: "refund", Guarded: true}}, 1, mk)
	if err != nil || removed != 1 {
		t.Fatalf("backfill: %d %v", removed, err)
	}
	if err := c.Apply(ctx, deliveries(2, cv.Visitor("refund now"))); err != nil {
		t.Fatal(err)
	}
	want := []string{"c1:tag_applied:refund", "c1:tag_removed", "c1:tag_applied:refund"}
	if got := outbox(t, st); !slices.Equal(got, want) {
		t.Fatalf("outbox:\n got  %v\n want %v", got, want)
	}
}
