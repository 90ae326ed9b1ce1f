package convview_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/convview"
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
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := convview.Ensure(ctx, js, time.Hour, 1)
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
