package statestore

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func testPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	return pool
}

// state returns a conversation's state after n messages (sequences 1..n).
func state(conv string, n int) *convstate.State {
	s := convstate.New("acme", conv)
	for i := 1; i <= n; i++ {
		s.Apply(&eventv1.Envelope{EventId: fmt.Sprintf("%s-e%d", conv, i), TenantId: "acme", ConversationId: conv,
			OccurredAt: timestamppb.New(time.Date(2026, 1, 2, 3, 4, i, 0, time.UTC)), Producer: "ingest",
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hi"}}}, uint64(i))
	}
	return s
}

func keys(convs ...string) []Key {
	var out []Key
	for _, c := range convs {
		out = append(out, Key{"acme", c})
	}
	return out
}

func TestLoadsJSONStatesSavedBeforeTheBinaryEncoding(t *testing.T) {
	ctx := context.Background()
	pool := testPool(t)
	old := state("c1", 3)
	doc, _ := json.Marshal(old)
	if _, err := pool.Exec(ctx, `INSERT INTO reporting_conversation_state (tenant_id, conversation_id, last_seq, state) VALUES ('acme', 'c1', 3, $1)`, string(doc)); err != nil {
		t.Fatal(err)
	}
	s := New(pool)
	got, err := s.Load(ctx, keys("c1", "c2"))
	if err != nil {
		t.Fatal(err)
	}
	if got[1] != nil || !reflect.DeepEqual(got[0], old) {
		t.Fatalf("loaded %+v", got)
	}
	// Saved again: binary from now on, and the same state for a store
	// that has not seen it.
	got[0].Apply(&eventv1.Envelope{EventId: "x", Payload: &eventv1.Envelope_Flagged{Flagged: &eventv1.Flagged{}}, OccurredAt: timestamppb.Now()}, 4)
	if err := s.Save(ctx, got[:1]); err != nil {
		t.Fatal(err)
	}
	var hasJSON, hasBin bool
	if err := pool.QueryRow(ctx, `SELECT state IS NOT NULL, state_bin IS NOT NULL FROM reporting_conversation_state`).Scan(&hasJSON, &hasBin); err != nil || hasJSON || !hasBin {
		t.Fatalf("stored json %v binary %v (%v)", hasJSON, hasBin, err)
	}
	fresh, err := New(pool).Load(ctx, keys("c1"))
	if err != nil || !reflect.DeepEqual(fresh[0], got[0]) {
		t.Fatalf("reloaded %+v, %v", fresh[0], err)
	}
}

func TestCachedStatesAreUsedOnlyWhilePostgreSQLAgrees(t *testing.T) {
	ctx := context.Background()
	pool := testPool(t)
	s := New(pool)
	a, b := state("a", 2), state("b", 3)
	if err := s.Save(ctx, []*convstate.State{a, b}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, keys("a", "b", "new"))
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != a || got[1] != b || got[2] != nil {
		t.Fatal("saved states not served from memory")
	}

	// Another replica saves a newer state of b: this store reads it.
	other := New(pool)
	b2 := state("b", 5)
	if err := other.Save(ctx, []*convstate.State{b2}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Load(ctx, keys("a", "b"))
	if got[0] != a || got[1] == b || !reflect.DeepEqual(got[1], b2) {
		t.Fatalf("newer state of another writer not seen: %+v", got[1])
	}

	// A state changed but not saved (a failed batch) is not served again,
	// even if the caller forgets to Forget it.
	a.Apply(&eventv1.Envelope{EventId: "y", Payload: &eventv1.Envelope_Flagged{Flagged: &eventv1.Flagged{}}, OccurredAt: timestamppb.Now()}, 10)
	got, _ = s.Load(ctx, keys("a"))
	if got[0] == a || got[0].LastSeq != 2 || got[0].Flagged {
		t.Fatalf("unsaved change served: %+v", got[0])
	}

	// Forget and Reset drop what the store remembers.
	s.Forget(keys("a"))
	if _, _, ok := s.cache.get(Key{"acme", "a"}); ok {
		t.Fatal("forgotten state still cached")
	}
	s.Reset()
	if s.cache.len() != 0 {
		t.Fatal("reset kept states")
	}

	// A state PostgreSQL no longer holds (table replaced or truncated) is
	// gone.
	if err := s.Save(ctx, []*convstate.State{state("c", 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `TRUNCATE reporting_conversation_state`); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Load(ctx, keys("c"))
	if got[0] != nil {
		t.Fatalf("state served after the table lost it: %+v", got[0])
	}
	if _, _, ok := s.cache.get(Key{"acme", "c"}); ok {
		t.Fatal("lost state still cached")
	}
}

func TestCacheStaysWithinItsBudget(t *testing.T) {
	c := newCache(10 * 1000)
	for i := range 100 {
		c.put(Key{"t", fmt.Sprint(i)}, &convstate.State{}, 1, 1000)
		if c.bytes > c.max {
			t.Fatalf("%d bytes over a budget of %d", c.bytes, c.max)
		}
	}
	if c.len() != 10 {
		t.Fatalf("%d entries", c.len())
	}
	// Least recently used go first.
	c.get(Key{"t", "90"})
	c.put(Key{"t", "new"}, &convstate.State{}, 1, 1000)
	if _, _, ok := c.get(Key{"t", "90"}); !ok {
		t.Fatal("recently used entry evicted")
	}
	if _, _, ok := c.get(Key{"t", "91"}); ok {
		t.Fatal("least recently used entry kept")
	}
	// Replacing an entry keeps the accounting right; one too large for the
	// whole budget is not kept.
	c.put(Key{"t", "new"}, &convstate.State{}, 2, 3000)
	c.put(Key{"t", "huge"}, &convstate.State{}, 1, c.max+1)
	if _, _, ok := c.get(Key{"t", "huge"}); ok || c.bytes > c.max {
		t.Fatalf("huge entry kept or budget exceeded: %d > %d", c.bytes, c.max)
	}
	sum := 0
	for _, e := range c.entries {
		sum += e.cost
	}
	if sum != c.bytes {
		t.Fatalf("accounted %d bytes, entries hold %d", c.bytes, sum)
	}
}
