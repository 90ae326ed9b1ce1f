package consumer_test

import (
	"context"
	"slices"
	"testing"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/rules"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/tagging/internal/consumer"
	"github.com/parley-dev/parley/services/tagging/internal/store"
	"google.golang.org/protobuf/proto"
)

func setup(t *testing.T) (*store.Store, *consumer.Consumer) {
	t.Helper()
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	e, err := rules.NewEngine(rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool)
	return st, consumer.New(consumer.Config{Store: st, Engine: e, Detectors: facts.DefaultSettings()})
}

func deliveries(first uint64, envs ...*eventv1.Envelope) []*eventbus.Delivery {
	var out []*eventbus.Delivery
	for i, e := range envs {
		out = append(out, &eventbus.Delivery{Envelope: e, StreamSeq: first + uint64(i)})
	}
	return out
}

// outbox returns the kinds queued in the outbox, in order.
func outbox(t *testing.T, st *store.Store) []string {
	t.Helper()
	rows, err := st.PendingOutbox(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		env := &eventv1.Envelope{}
		if err := proto.Unmarshal(r.Envelope, env); err != nil {
			t.Fatal(err)
		}
		d := ""
		if ta := env.GetTagApplied(); ta != nil {
			d = ":" + ta.Tag
		}
		if is := env.GetIssueDetected(); is != nil {
			d = ":" + is.Issue
		}
		out = append(out, env.ConversationId+":"+eventbus.Kind(env)+d)
	}
	return out
}

// TestRedeliveryIsANoOp hands the same batch to the handler again, whole and
// event by event (the consumer's retry path): nothing is applied twice.
func TestRedeliveryIsANoOp(t *testing.T) {
	ctx := context.Background()
	st, c := setup(t)
	if _, err := st.CreateRule(ctx, store.Rule{TenantID: "acme", RuleID: "r1", Name: "r1", Tag: "three-fallbacks",
		Expression: "conversation.unidentified_count >= 2", Enabled: true}, 0); err != nil {
		t.Fatal(err)
	}
	cv := evtest.New("acme", "c1")
	batch := deliveries(1, cv.Visitor("what is the price?"), cv.Fallback("??"), cv.Visitor("What is the price"), cv.Fallback("??"),
		cv.Bot("Which plan?", 100), cv.Ended(eventv1.EndReason_END_REASON_STALE_TIMEOUT))
	if err := c.Apply(ctx, batch); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"c1:issue_detected:unidentified-response", "c1:tag_applied:unidentified-response",
		"c1:issue_detected:repeated-question", "c1:tag_applied:repeated-question",
		"c1:tag_applied:three-fallbacks",
		"c1:issue_detected:abandoned-after-bot", "c1:tag_applied:abandoned-after-bot",
	}
	if got := outbox(t, st); !slices.Equal(got, want) {
		t.Fatalf("outbox:\n got  %v\n want %v", got, want)
	}
	if err := c.Apply(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for _, d := range batch {
		if err := c.Apply(ctx, []*eventbus.Delivery{d}); err != nil {
			t.Fatal(err)
		}
	}
	if got := outbox(t, st); !slices.Equal(got, want) {
		t.Fatalf("after redelivery:\n got  %v\n want %v", got, want)
	}
	s, err := st.ConversationState(ctx, "acme", "c1")
	if err != nil || s.AppliedSeq != 6 || s.Facts.UnidentifiedCount != 2 || s.Facts.VisitorMessages != 2 {
		t.Fatalf("state: %+v %v", s, err)
	}
}

// TestRuleChangesReachTheConsumer: a rule change is picked up by the next
// batch (generation check), with the new version.
func TestRuleChangesReachTheConsumer(t *testing.T) {
	ctx := context.Background()
	st, c := setup(t)
	if _, err := st.CreateRule(ctx, store.Rule{TenantID: "acme", RuleID: "r1", Name: "r1", Tag: "t", Expression: `event.text == "a"`, Enabled: true}, 0); err != nil {
		t.Fatal(err)
	}
	cv := evtest.New("acme", "c1")
	if err := c.Apply(ctx, deliveries(1, cv.Visitor("b"))); err != nil {
		t.Fatal(err)
	}
	if got := outbox(t, st); len(got) != 0 {
		t.Fatalf("nothing should match yet: %v", got)
	}
	if _, err := st.UpdateRule(ctx, "acme", "r1", "test", func(r *store.Rule) (bool, error) { r.Expression = `event.text == "b"`; return true, nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, deliveries(2, cv.Visitor("b"))); err != nil {
		t.Fatal(err)
	}
	if got := outbox(t, st); !slices.Equal(got, []string{"c1:tag_applied:t"}) {
		t.Fatalf("outbox: %v", got)
	}
	applied, err := st.AppliedForRule(ctx, "acme", "r1")
	if err != nil || len(applied) != 1 || applied[0].RuleVersion != 2 || applied[0].TriggerSeq != 2 {
		t.Fatalf("applied: %+v %v", applied, err)
	}
	// Another tenant's events never meet acme's rules.
	other := evtest.New("globex", "c1")
	if err := c.Apply(ctx, deliveries(3, other.Visitor("b"))); err != nil {
		t.Fatal(err)
	}
	if got := outbox(t, st); len(got) != 1 {
		t.Fatalf("globex was tagged by acme's rule: %v", got)
	}
}
