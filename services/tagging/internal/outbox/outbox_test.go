package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/tagging/internal/derive"
	"github.com/parley-dev/parley/services/tagging/internal/outbox"
	"github.com/parley-dev/parley/services/tagging/internal/store"
)

type flaky struct {
	failAt int
	calls  int
	got    []string
}

func (f *flaky) Publish(_ context.Context, env *eventv1.Envelope) (eventbus.PubAck, error) {
	f.calls++
	if f.calls == f.failAt {
		return eventbus.PubAck{}, fmt.Errorf("%w: down", eventbus.ErrUnavailable)
	}
	f.got = append(f.got, env.ConversationId)
	return eventbus.PubAck{Sequence: uint64(f.calls)}, nil
}

// TestLeftoversArePublishedInOrder: a failed publish leaves its row and the
// rows after it; the next drain publishes them, in order, once.
func TestLeftoversArePublishedInOrder(t *testing.T) {
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	st := store.New(pool)
	var apps []store.Application
	for i := range 5 {
		trig := derive.Trigger{TenantID: "acme", ConversationID: fmt.Sprintf("c%d", i), EventID: fmt.Sprint(i)}
		e := derive.TagApplied(trig, "r", 1, "t", eventv1.TagSource_TAG_SOURCE_RULE, time.Now())
		apps = append(apps, store.Application{TenantID: "acme", Applied: store.Applied{ConversationID: trig.ConversationID, RuleID: "r", Tag: "t",
			Source: store.SourceRule, RuleVersion: 1, EventID: e.EventId}, Events: []*eventv1.Envelope{e}})
	}
	if err := st.InTx(ctx, func(tx pgx.Tx) error { _, err := store.Apply(ctx, tx, apps); return err }); err != nil {
		t.Fatal(err)
	}
	pub := &flaky{failAt: 3}
	r := outbox.New(st, pub, nil, nil)
	if err := r.Drain(ctx); !errors.Is(err, eventbus.ErrUnavailable) {
		t.Fatalf("first drain: %v", err)
	}
	if left, _ := st.PendingOutbox(ctx, 10); len(left) != 3 {
		t.Fatalf("left after the failure: %d rows, want 3", len(left))
	}
	if err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(pub.got, []string{"c0", "c1", "c2", "c3", "c4"}) {
		t.Fatalf("published %v", pub.got)
	}
	if left, _ := st.PendingOutbox(ctx, 10); len(left) != 0 {
		t.Fatalf("left: %d", len(left))
	}
}
