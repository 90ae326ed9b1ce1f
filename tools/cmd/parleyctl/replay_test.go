package main

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// TestReleaseReplay holds a conversation behind an event the handler
// refuses, fixes the cause and runs `partitions release --replay`: the
// running consumer applies the held events from the stream, in order and
// before the conversation's later events, and the hold is gone.
func TestReleaseReplay(t *testing.T) {
	ctx := context.Background()
	pgURL, pool, bus := partitionEnv(t)
	if _, err := pool.Exec(ctx, `CREATE TABLE applied_replay (n serial PRIMARY KEY, seq bigint NOT NULL UNIQUE, event text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	publish := func(tenant, conv, id string) {
		if _, err := bus.Publish(ctx, eventbus.NewEnvelope(tenant, conv, &eventv1.MessagePosted{Text: id}, eventbus.WithEventID(id))); err != nil {
			t.Fatal(err)
		}
	}
	var refuse atomic.Bool
	refuse.Store(true)
	h := func(ctx context.Context, b partition.Batch) error {
		for _, d := range b.Deliveries {
			if refuse.Load() && d.Envelope.GetMessagePosted().GetText() == "poison" {
				return eventbus.Permanent(errors.New("test: refused"))
			}
		}
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for _, d := range b.Deliveries {
				if _, err := tx.Exec(ctx, `INSERT INTO applied_replay (seq, event) VALUES ($1, $2)`, int64(d.StreamSeq), d.Envelope.GetEventId()); err != nil {
					return err
				}
			}
			return partition.Commit(ctx, tx, b.Lease, b.Last())
		})
	}
	runConsumer(t, bus, pool, "replay-test", 4, h)
	// applied lists acme/c1's applied events in the order applied
	// (partitions are applied concurrently: acme/c2's "other" is left out).
	applied := func() string {
		rows, _ := pool.Query(ctx, `SELECT event FROM applied_replay WHERE event <> 'other' ORDER BY n`)
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, " ")
	}
	wait := func(what string, cond func() bool) { t.Helper(); waitFor(t, what, cond, applied) }
	publish("acme", "c1", "first")  // 1: applied
	publish("acme", "c1", "poison") // 2: dead-lettered, acme/c1 held
	publish("acme", "c1", "held")   // 3: dead-lettered as held
	publish("acme", "c2", "other")  // 4: applied
	wait("the hold", func() bool {
		held, err := partition.Held(ctx, pool, "replay-test")
		return err == nil && len(held) == 1 && applied() == "first"
	})

	// Replayed before the cause is fixed: the event fails again and the
	// conversation is held anew (no longer marked for replay).
	if _, _, err := ctl(t, pgURL, "partitions", "release", "--consumer", "replay-test", "--tenant", "acme", "--conversation", "c1", "--replay"); err != nil {
		t.Fatal(err)
	}
	wait("the failed replay", func() bool {
		held, err := partition.Held(ctx, pool, "replay-test")
		h, ok := held[partition.Conversation{TenantID: "acme", ConversationID: "c1"}]
		return err == nil && ok && !h.Replay && h.BlockedSeq == 2 && h.Reason == "test: refused"
	})
	if got := applied(); got != "first" {
		t.Fatalf("applied %q after the failed replay, want first", got)
	}

	refuse.Store(false) // the cause is fixed
	out, _, err := ctl(t, pgURL, "partitions", "release", "--consumer", "replay-test", "--tenant", "acme", "--conversation", "c1", "--replay")
	if err != nil || !strings.Contains(out, "replaying acme/c1 in replay-test from stream sequence 2") {
		t.Fatalf("release --replay: %v\n%s", err, out)
	}
	wait("the replay", func() bool {
		held, err := partition.Held(ctx, pool, "replay-test")
		return err == nil && len(held) == 0
	})
	publish("acme", "c1", "after") // 5: applied after the replayed ones
	wait("the later event", func() bool { return strings.HasSuffix(applied(), "after") })
	var other int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM applied_replay WHERE event = 'other'`).Scan(&other); err != nil || other != 1 {
		t.Fatalf("acme/c2 applied %d times (%v), want once", other, err)
	}
	if got, want := applied(), "first poison held after"; got != want {
		t.Fatalf("applied %q, want %q", got, want)
	}
	out, _, _ = ctl(t, pgURL, "partitions", "status", "--consumer", "replay-test")
	if !strings.Contains(out, "held conversations: 0\n") {
		t.Fatalf("still held after the replay:\n%s", out)
	}
	if _, _, err := ctl(t, pgURL, "partitions", "release", "--consumer", "replay-test", "--tenant", "acme", "--conversation", "c1", "--replay"); err == nil {
		t.Fatal("replayed a conversation that is not held")
	}
}
