package partition_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// One poison event among many conversations' events, all read in one
// batch: it costs O(log n) extra handler calls (bisection), is
// dead-lettered with its reason, only its own conversation's later event
// is held, and every other event is applied once.
func TestPoisonIsIsolatedByBisection(t *testing.T) {
	ctx := context.Background()
	pool := pool(t)
	srv := testenv.NATS(t)
	bus, err := eventbus.Connect(ctx, srv.URL, "test", eventbus.Options{Producer: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE applied (seq bigint PRIMARY KEY, conv text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const convs = 64
	publish := func(conv, id string) {
		env := &eventv1.Envelope{EventId: id, TenantId: "acme", ConversationId: conv,
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Text: id}}}
		if _, err := bus.Publish(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	for i := range convs {
		publish(fmt.Sprintf("c%02d", i), fmt.Sprintf("first-%02d", i))
	}
	publish("c20", "poison")
	publish("c20", "after-poison")
	publish("c21", "second-21")

	var mu sync.Mutex
	calls := 0
	h := func(ctx context.Context, b partition.Batch) error {
		mu.Lock()
		calls++
		mu.Unlock()
		for _, d := range b.Deliveries {
			if d.Envelope.GetEventId() == "poison" {
				return eventbus.Permanent(errors.New("test: refused"))
			}
		}
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for _, d := range b.Deliveries {
				if _, err := tx.Exec(ctx, `INSERT INTO applied VALUES ($1, $2)`, int64(d.StreamSeq), d.Envelope.GetConversationId()); err != nil {
					return err
				}
			}
			return partition.Commit(ctx, tx, b.Lease, b.Last())
		})
	}
	c := partition.NewConsumer(partition.Config{Bus: bus, Pool: pool, BatchSize: 500,
		Coordinator: partition.NewCoordinator(pool, "test", "m1", 1, time.Second)})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(cctx, h) }()
	defer func() { cancel(); <-done }()

	total := uint64(convs + 3)
	deadline := time.Now().Add(20 * time.Second)
	for {
		pos, err := partition.Positions(ctx, pool, "test", 1)
		if err == nil && pos[0] >= total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("position %v, want %d", pos, total)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var applied int
	var c20 int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE conv = 'c20') FROM applied`).Scan(&applied, &c20); err != nil {
		t.Fatal(err)
	}
	if applied != convs+1 || c20 != 1 {
		t.Fatalf("applied %d events (%d of c20), want %d (1 of c20)", applied, c20, convs+1)
	}
	mu.Lock()
	n := calls
	mu.Unlock()
	// One call for the batch, then two per level down to the poison:
	// 1 + 2*ceil(log2(67)) = 15.
	if n > 15 {
		t.Fatalf("%d handler calls for one poison event in a batch of %d", n, total)
	}
	held, err := partition.Held(ctx, pool, "test")
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := held[partition.Conversation{TenantID: "acme", ConversationID: "c20"}]; !ok || h.BlockedSeq != convs+1 || h.Reason != "test: refused" || len(held) != 1 {
		t.Fatalf("held %v", held)
	}
	st, err := bus.JetStream().Stream(ctx, eventbus.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().State.Msgs; got != 2 {
		t.Fatalf("%d dead letters, want the poison and the event held behind it", got)
	}
}
