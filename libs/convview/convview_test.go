package convview_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

func TestReaderSeesExistingAndNewEntries(t *testing.T) {
	n := testenv.NATS(t)
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bus, err := eventbus.New(nc, eventbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := convview.Ensure(ctx, bus, time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	w := convview.NewWriter(kv)
	endedAt := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	if err := w.MarkEnded(ctx, "acme", "before-watch", endedAt, eventv1.EndReason_END_REASON_VISITOR_CLOSED); err != nil {
		t.Fatal(err)
	}
	r, err := convview.Watch(ctx, kv, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := r.Ready(rctx); err != nil {
		t.Fatal(err)
	}
	got, ok := r.Ended("acme", "before-watch")
	if !ok || !got.EndedAt.Equal(endedAt) || got.Reason != eventv1.EndReason_END_REASON_VISITOR_CLOSED {
		t.Fatalf("existing entry: %+v %v", got, ok)
	}
	if _, ok := r.Ended("other-tenant", "before-watch"); ok {
		t.Fatal("entry visible under another tenant")
	}
	if err := w.MarkEnded(ctx, "acme", "after-watch", endedAt, eventv1.EndReason_END_REASON_STALE_TIMEOUT); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		if got, ok := r.Ended("acme", "after-watch"); ok {
			if got.Reason != eventv1.EndReason_END_REASON_STALE_TIMEOUT {
				t.Fatalf("reason %v", got.Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("new entry not visible within a second")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if r.Len() != 2 {
		t.Fatalf("Len %d", r.Len())
	}
}

// MarkEndedAll stores many entries in one atomic batch, and ensuring the
// bucket again (as every service does at start) keeps batches allowed.
func TestMarkEndedAllInOneBatch(t *testing.T) {
	n := testenv.NATS(t)
	nc, err := nats.Connect(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	bus, err := eventbus.New(nc, eventbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	js := bus.JetStream()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := convview.Ensure(ctx, bus, time.Hour, 1); err != nil {
		t.Fatal(err)
	}
	kv, err := convview.Ensure(ctx, bus, time.Hour, 1)
	if err != nil {
		t.Fatal(err)
	}
	w := convview.NewWriter(kv, bus.PublishAtomic)
	endedAt := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	var entries []convview.Entry
	for i := range 50 {
		entries = append(entries, convview.Entry{TenantID: "acme", ConversationID: fmt.Sprintf("c%d", i), At: endedAt.Add(time.Duration(i) * time.Second), Reason: eventv1.EndReason_END_REASON_BOT_COMPLETED})
	}
	st, err := js.Stream(ctx, "KV_"+convview.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := st.Info(ctx)
	if err := w.MarkEndedAll(ctx, entries); err != nil {
		t.Fatal(err)
	}
	after, _ := st.Info(ctx)
	if got := after.State.Msgs - before.State.Msgs; got != 50 {
		t.Fatalf("stored %d entries, want 50", got)
	}
	r, err := convview.Watch(ctx, kv, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
	defer rcancel()
	if err := r.Ready(rctx); err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		got, ok := r.Ended("acme", e.ConversationID)
		if !ok || !got.EndedAt.Equal(e.At) || got.Reason != eventv1.EndReason_END_REASON_BOT_COMPLETED {
			t.Fatalf("entry %d: %+v %v", i, got, ok)
		}
	}
	// Writing the same entries again is harmless.
	if err := w.MarkEndedAll(ctx, entries); err != nil {
		t.Fatal(err)
	}
}
