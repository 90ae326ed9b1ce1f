package partition_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// A group's backlog counts exactly the events after their own partition's
// position: events of partitions that are further on do not count, and
// partitions that never saw an event do not hold the group back.
func TestBacklog(t *testing.T) {
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
	const n = 4
	// Two conversations of different partitions.
	a, b := "c0", ""
	for i := 1; b == ""; i++ {
		if c := fmt.Sprintf("c%d", i); partition.Of("acme", c, n) != partition.Of("acme", a, n) {
			b = c
		}
	}
	pa, pb := partition.Of("acme", a, n), partition.Of("acme", b, n)
	// Sequences 1..8: a at odd ones, b at even ones.
	for i := 1; i <= 8; i++ {
		conv := a
		if i%2 == 0 {
			conv = b
		}
		env := &eventv1.Envelope{EventId: fmt.Sprintf("e%d", i), TenantId: "acme", ConversationId: conv,
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Text: "hi"}}}
		if _, err := bus.Publish(ctx, env); err != nil {
			t.Fatal(err)
		}
	}

	backlog := func(group string) (uint64, bool) {
		t.Helper()
		got, known, err := partition.Backlog(ctx, bus, pool, eventbus.ConvStream, group)
		if err != nil {
			t.Fatal(err)
		}
		return got, known
	}
	if got, known := backlog("lifecycle"); known || got != 0 {
		t.Fatalf("before any lease: backlog %d, known %v", got, known)
	}
	co := partition.NewCoordinator(pool, "lifecycle", "m1", n, 0)
	leases, err := co.Heartbeat(ctx)
	if err != nil || len(leases) != n {
		t.Fatalf("heartbeat: %v, %d leases", err, len(leases))
	}
	set := func(pos map[int]uint64) {
		t.Helper()
		if _, err := pool.Exec(ctx, `DELETE FROM partition_positions`); err != nil {
			t.Fatal(err)
		}
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for p, seq := range pos {
				if err := partition.Commit(ctx, tx, leases[p], seq); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		pos  map[int]uint64
		want uint64
	}{
		{"nothing applied", nil, 8},
		{"a's partition at 4", map[int]uint64{pa: 4, pb: 8}, 2},       // a's 5 and 7
		{"b's partition at 2", map[int]uint64{pa: 8, pb: 2}, 3},       // b's 4, 6 and 8
		{"both at their last event", map[int]uint64{pa: 7, pb: 8}, 0}, // the rest never saw an event
		{"every partition at the end", map[int]uint64{0: 8, 1: 8, 2: 8, 3: 8}, 0},
	} {
		set(c.pos)
		if got, known := backlog("lifecycle"); !known || got != c.want {
			t.Errorf("%s: backlog %d (known %v), want %d", c.name, got, known, c.want)
		}
	}
	groups, err := partition.Groups(ctx, pool)
	if err != nil || !slices.Equal(groups, []string{"lifecycle"}) {
		t.Fatalf("groups %v, %v", groups, err)
	}
}
