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

func TestLoadKeepsTheOrderOfKeysAndSaveNeverGoesBack(t *testing.T) {
	ctx := context.Background()
	pool := testPool(t)
	s := New(pool)
	a, b := state("a", 2), state("b", 5)
	if err := s.Save(ctx, []*convstate.State{a, b}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(ctx, keys("b", "none", "a"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !reflect.DeepEqual(got[0], b) || got[1] != nil || !reflect.DeepEqual(got[2], a) {
		t.Fatalf("loaded %+v", got)
	}
	// An older state (a slower writer) does not replace a newer one.
	if err := s.Save(ctx, []*convstate.State{state("b", 3), state("a", 4)}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Load(ctx, keys("a", "b"))
	if got[0].LastSeq != 4 || got[1].LastSeq != 5 || got[1].VisitorMessages != 5 {
		t.Fatalf("after an older write: a@%d, b@%d", got[0].LastSeq, got[1].LastSeq)
	}
	// The rebuild's table has the same shape.
	if _, err := pool.Exec(ctx, `CREATE TABLE rebuilt (LIKE reporting_conversation_state INCLUDING ALL)`); err != nil {
		t.Fatal(err)
	}
	r := s.WithTable("rebuilt")
	if err := r.Save(ctx, []*convstate.State{state("a", 1)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.Load(ctx, keys("a", "b")); got[0].LastSeq != 1 || got[1] != nil {
		t.Fatalf("rebuild table: %+v", got)
	}
}
