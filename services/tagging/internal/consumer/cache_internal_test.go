package consumer

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/rules"
	"github.com/parley-dev/parley/libs/testenv"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"github.com/parley-dev/parley/services/tagging/internal/store"
)

// TestStateCacheBound: the least recently used states go first once the
// estimated memory is over the bound; take removes what it returns.
func TestStateCacheBound(t *testing.T) {
	st := func(size int) *store.ConvState {
		return &store.ConvState{Size: size, Facts: &taggingv1.RuleConversation{}}
	}
	k := func(i int) store.ConvKey { return store.ConvKey{TenantID: "t", ConversationID: fmt.Sprint("c", i)} }
	one := entrySize(k(0), st(1000))
	c := newStateCache(3 * one)
	for i := range 3 {
		c.put(0, map[store.ConvKey]*store.ConvState{k(i): st(1000)})
	}
	if c.len() != 3 {
		t.Fatalf("%d cached", c.len())
	}
	// Taking c0 and putting it back makes it the most recent; c1 goes when
	// c3 comes.
	got := c.take([]store.ConvKey{k(0), k(9)})
	if len(got) != 1 || got[k(0)] == nil || c.len() != 2 {
		t.Fatalf("take: %v, %d left", got, c.len())
	}
	c.put(0, got)
	c.put(0, map[store.ConvKey]*store.ConvState{k(3): st(1000)})
	if c.len() != 3 || c.bytes > c.maxBytes {
		t.Fatalf("%d cached, %d of %d bytes", c.len(), c.bytes, c.maxBytes)
	}
	if got := c.take([]store.ConvKey{k(0), k(1), k(2), k(3)}); got[k(1)] != nil || len(got) != 3 {
		t.Fatalf("after eviction: %v", got)
	}
	// A state larger than the whole bound is not kept.
	c.put(0, map[store.ConvKey]*store.ConvState{k(4): st(10_000)})
	if c.len() != 0 || c.bytes != 0 {
		t.Fatalf("%d cached, %d bytes", c.len(), c.bytes)
	}
}

// TestFailedBatchForgetsItsStates: a batch whose transaction fails puts
// none of the states it took back; the next batch reads them from
// PostgreSQL, and the states of committed batches are kept.
func TestFailedBatchForgetsItsStates(t *testing.T) {
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
	c := New(Config{Store: st, Engine: e, Detectors: facts.DefaultSettings()})
	cv, other := evtest.New("acme", "c1"), evtest.New("acme", "c2")
	if err := c.Apply(ctx, []*eventbus.Delivery{{Envelope: cv.Visitor("one"), StreamSeq: 1}, {Envelope: other.Visitor("x"), StreamSeq: 2}}); err != nil {
		t.Fatal(err)
	}
	if c.states.len() != 2 {
		t.Fatalf("%d states kept", c.states.len())
	}
	// Writing c1 at applied_seq 3 fails.
	if _, err := pool.Exec(ctx, `CREATE FUNCTION fail_c1() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.conversation_id = 'c1' AND NEW.applied_seq = 3 THEN RAISE EXCEPTION 'injected'; END IF; RETURN NEW; END $$;
		CREATE TRIGGER fail_c1 BEFORE UPDATE ON tagging_conversations FOR EACH ROW EXECUTE FUNCTION fail_c1()`); err != nil {
		t.Fatal(err)
	}
	two := cv.Visitor("two")
	if err := c.Apply(ctx, []*eventbus.Delivery{{Envelope: two, StreamSeq: 3}}); err == nil {
		t.Fatal("the injected failure did not fail the batch")
	}
	if got := c.states.take([]store.ConvKey{{TenantID: "acme", ConversationID: "c1"}}); len(got) != 0 {
		t.Fatalf("the failed batch's state was kept: %v", got)
	}
	if _, err := pool.Exec(ctx, `DROP TRIGGER fail_c1 ON tagging_conversations`); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, []*eventbus.Delivery{{Envelope: two, StreamSeq: 3}, {Envelope: cv.Visitor("three"), StreamSeq: 4}}); err != nil {
		t.Fatal(err)
	}
	s, err := st.ConversationState(ctx, "acme", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if s.AppliedSeq != 4 || s.Facts.Events != 3 || len(s.Facts.Messages) != 3 {
		t.Fatalf("state: seq %d, %d events, %d messages", s.AppliedSeq, s.Facts.Events, len(s.Facts.Messages))
	}
	if c.states.len() != 2 {
		t.Fatalf("%d states kept", c.states.len())
	}
}

// TestKeptStatesFollowLeases: kept states belong to the partition whose
// batch stored them; a partition no longer held (Retain) or taken again
// under a new lease (Handle) loses them, and a batch under a lost lease
// commits nothing.
func TestKeptStatesFollowLeases(t *testing.T) {
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	if err := partition.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	const n = 4
	leases, err := partition.NewCoordinator(pool, Durable, "a", n, time.Minute).Heartbeat(ctx)
	if err != nil || len(leases) != n {
		t.Fatalf("leases %v: %v", leases, err)
	}
	// Three conversations: two in partition p, one in another, q.
	p := partition.Of("acme", "c0", n)
	var sameP, inQ string
	for i := 1; sameP == "" || inQ == ""; i++ {
		id := fmt.Sprint("c", i)
		switch part := partition.Of("acme", id, n); {
		case part == p && sameP == "":
			sameP = id
		case part != p && inQ == "":
			inQ = id
		}
	}
	q := partition.Of("acme", inQ, n)
	e, err := rules.NewEngine(rules.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool)
	c := New(Config{Store: st, Engine: e, Detectors: facts.DefaultSettings()})
	batch := func(l partition.Lease, conv string, seq uint64) partition.Batch {
		return partition.Batch{Lease: l, Deliveries: []*eventbus.Delivery{{Envelope: evtest.New("acme", conv).Visitor(fmt.Sprint("m", seq)), StreamSeq: seq}}}
	}
	if err := c.Handle(ctx, batch(leases[p], "c0", 1)); err != nil {
		t.Fatal(err)
	}
	if err := c.Handle(ctx, batch(leases[q], inQ, 2)); err != nil {
		t.Fatal(err)
	}
	if c.states.len() != 2 {
		t.Fatalf("%d states kept, want 2", c.states.len())
	}
	key := func(conv string) []store.ConvKey { return []store.ConvKey{{TenantID: "acme", ConversationID: conv}} }
	// q moved away: its states go.
	c.Retain(map[int]int64{p: leases[p].Epoch})
	if c.states.len() != 1 || len(c.states.take(key(inQ))) != 0 {
		t.Fatalf("partition %d's state kept after it moved away (%d kept)", q, c.states.len())
	}
	// p moved away and came back (two takes later): the states kept under
	// the old lease go before the first batch under the new one.
	if _, err := pool.Exec(ctx, `UPDATE partition_leases SET epoch = epoch + 2 WHERE consumer = $1 AND partition = $2`, Durable, p); err != nil {
		t.Fatal(err)
	}
	back := leases[p]
	back.Epoch += 2
	if err := c.Handle(ctx, batch(back, sameP, 3)); err != nil {
		t.Fatal(err)
	}
	if c.states.len() != 1 || len(c.states.take(key("c0"))) != 0 {
		t.Fatalf("state kept under the old lease survived the partition's return (%d kept)", c.states.len())
	}
	// The old lease is fenced: nothing of its batch is committed.
	if err := c.Handle(ctx, batch(leases[p], "c0", 4)); !errors.Is(err, partition.ErrFenced) {
		t.Fatalf("batch under a lost lease: %v", err)
	}
	if s, err := st.ConversationState(ctx, "acme", "c0"); err != nil || s.AppliedSeq != 1 {
		t.Fatalf("fenced batch applied: %+v %v", s, err)
	}
	pos, err := partition.Positions(ctx, pool, Durable, n)
	if err != nil || pos[p] != 3 || pos[q] != 2 {
		t.Fatalf("positions %v: %v", pos, err)
	}
}
