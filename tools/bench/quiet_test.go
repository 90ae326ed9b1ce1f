package bench

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// A partition group (lifecycle's: no durable consumer) behind the stream
// keeps the bench waiting until its position reaches the stream's end.
func TestConsumersBusyWaitsForPartitionGroups(t *testing.T) {
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t), MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := partition.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	srv := testenv.NATS(t)
	bus, err := eventbus.Connect(ctx, srv.URL, "test", eventbus.Options{Producer: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"e1", "e2", "e3"} {
		env := &eventv1.Envelope{EventId: id, TenantId: "acme", ConversationId: "c1",
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Text: "hi"}}}
		if _, err := bus.Publish(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	leases, err := partition.NewCoordinator(pool, "lifecycle", "m1", 1, 0).Heartbeat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	commit := func(seq uint64) {
		t.Helper()
		if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return partition.Commit(ctx, tx, leases[0], seq) }); err != nil {
			t.Fatal(err)
		}
	}
	commit(1)
	busy, last, err := consumersBusy(ctx, bus, pool)
	if err != nil || last != 3 || !strings.Contains(busy, "partition group lifecycle has 2 events") {
		t.Fatalf("at 1 of 3: busy %q, last %d, %v", busy, last, err)
	}
	commit(3)
	if busy, last, err := consumersBusy(ctx, bus, pool); err != nil || last != 3 || busy != "" {
		t.Fatalf("at 3 of 3: busy %q, last %d, %v", busy, last, err)
	}
}
