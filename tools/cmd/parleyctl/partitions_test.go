package main

import (
	"context"
	"errors"
	"fmt"
	"github.com/jackc/pgx/v5/pgxpool"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// TestPartitionsCommands runs a partitioned consumer on real NATS and
// PostgreSQL, holds a conversation behind a poison event, shows it with
// `parleyctl partitions status` and releases it with `partitions release`:
// the running consumer applies the conversation's later events again.
func TestPartitionsCommands(t *testing.T) {
	ctx := context.Background()
	pgURL, pool, bus := partitionEnv(t)
	if _, err := pool.Exec(ctx, `CREATE TABLE applied (seq bigint PRIMARY KEY, conv text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	publish := func(tenant, conv, id string) {
		env := &eventv1.Envelope{EventId: id, TenantId: tenant, ConversationId: conv,
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Text: id}}}
		if _, err := bus.Publish(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	h := func(ctx context.Context, b partition.Batch) error {
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
	const parts = 4
	runConsumer(t, bus, pool, "ops-test", parts, h)
	// A second group's member whose lease and membership have expired.
	if _, err := pool.Exec(ctx, `INSERT INTO partition_members VALUES ('other', 'gone', now() - interval '1 minute');
		INSERT INTO partition_leases VALUES ('other', 0, 'gone', 7, now() - interval '1 minute')`); err != nil {
		t.Fatal(err)
	}

	wait := func(what string, cond func() bool) { t.Helper(); waitFor(t, what, cond, nil) }
	caughtUp := func(seq uint64) func() bool {
		return func() bool {
			pos, err := partition.Positions(ctx, pool, "ops-test", parts)
			if err != nil {
				return false
			}
			for _, p := range pos {
				if p < seq {
					return false
				}
			}
			return true
		}
	}
	publish("acme", "c1", "poison") // 1: dead-lettered, acme/c1 held
	publish("acme", "c1", "held")   // 2: dead-lettered as held
	publish("globex", "c1", "ok")   // 3: applied (another tenant's c1)
	wait("position 3", caughtUp(3))

	out, _, err := ctl(t, pgURL, "partitions", "status")
	if err != nil {
		t.Fatal(err)
	}
	p := partition.Of("acme", "c1", parts)
	for _, want := range []string{
		"consumer ops-test\n", "consumer other\n",
		"m1", "alive", "gone", "expired",
		"held conversations: 1\n", "held conversations: 0\n",
		fmt.Sprintf("acme    c1            %d          1            test: refused", p),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	for part := range parts {
		if !strings.Contains(out, fmt.Sprintf("\n%d          m1     ", part)) {
			t.Errorf("status lacks partition %d owned by m1:\n%s", part, out)
		}
	}
	if !strings.Contains(out, "0          gone   7      0         expired") {
		t.Errorf("status lacks the expired lease of group other:\n%s", out)
	}
	one, _, err := ctl(t, pgURL, "partitions", "status", "--consumer", "other")
	if err != nil || strings.Contains(one, "ops-test") || !strings.Contains(one, "consumer other") {
		t.Fatalf("status --consumer other: %v\n%s", err, one)
	}

	if _, _, err := ctl(t, pgURL, "partitions", "release", "--consumer", "ops-test", "--tenant", "globex", "--conversation", "c1"); err == nil {
		t.Fatal("released a conversation that is not held")
	}
	out, _, err = ctl(t, pgURL, "partitions", "release", "--consumer", "ops-test", "--tenant", "acme", "--conversation", "c1")
	if err != nil || !strings.Contains(out, "released acme/c1 in ops-test (held behind stream sequence 1: test: refused)") {
		t.Fatalf("release: %v\n%s", err, out)
	}
	// The running consumer re-reads the held set within TTL/3 = 200ms.
	time.Sleep(time.Second)
	publish("acme", "c1", "after") // 4: applied without a restart
	wait("position 4", caughtUp(4))
	rows, _ := pool.Query(ctx, `SELECT seq FROM applied ORDER BY seq`)
	got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil || fmt.Sprint(got) != "[3 4]" {
		t.Fatalf("applied %v %v, want [3 4]", got, err)
	}
	out, _, _ = ctl(t, pgURL, "partitions", "status", "--consumer", "ops-test")
	if !strings.Contains(out, "held conversations: 0\n") {
		t.Fatalf("still held after release:\n%s", out)
	}
}

// partitionEnv is a real PostgreSQL database with the partition tables and
// a real NATS server with Parley's streams.
func partitionEnv(t *testing.T) (pgURL string, pool *pgxpool.Pool, bus *eventbus.Bus) {
	t.Helper()
	ctx := context.Background()
	pgURL = testenv.Postgres(t)
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := partition.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	srv := testenv.NATS(t)
	bus, err = eventbus.Connect(ctx, srv.URL, "test", eventbus.Options{Producer: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	return pgURL, pool, bus
}

// runConsumer runs a partition consumer of group (one member, m1) with h
// until the test ends.
func runConsumer(t *testing.T, bus *eventbus.Bus, pool *pgxpool.Pool, group string, parts int, h partition.Handler) {
	c := partition.NewConsumer(partition.Config{Bus: bus, Pool: pool,
		Coordinator: partition.NewCoordinator(pool, group, "m1", parts, 600*time.Millisecond)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx, h) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitFor polls cond for up to 20 s; state, when set, describes what the
// test saw on timeout.
func waitFor(t *testing.T, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			if state != nil {
				t.Fatalf("timed out waiting for %s (%s)", what, state())
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
