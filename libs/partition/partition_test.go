package partition_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
)

// The documented hash: FNV-1a 32 of tenant followed by conversation, modulo
// n, as NATS's {{partition(n,1,2)}} subject transform computes it (expected
// values computed with an independent implementation, and acme/c1 and
// globex/c1 checked against a stream with that transform: 15 and 2 of 16).
func TestOf(t *testing.T) {
	for _, c := range []struct {
		tenant, conv string
		n, want      int
	}{
		{"acme", "c1", 16, 15}, {"acme", "c1", 7, 5},
		{"acme", "conv-42", 16, 6}, {"acme", "conv-42", 7, 4},
		{"globex", "c1", 16, 2}, {"globex", "c1", 7, 2},
		{"acme", "c1", 1, 0},
	} {
		if got := partition.Of(c.tenant, c.conv, c.n); got != c.want {
			t.Errorf("Of(%q, %q, %d) = %d, want %d", c.tenant, c.conv, c.n, got, c.want)
		}
	}
}

func TestIsPermanent(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{eventbus.Permanent(errors.New("bad")), true},
		{fmt.Errorf("apply: %w", &pgconn.PgError{Code: "22P02"}), true},
		{fmt.Errorf("apply: %w", &pgconn.PgError{Code: "23505"}), true},
		{&pgconn.PgError{Code: "40001"}, false}, // serialization failure
		{&pgconn.PgError{Code: "08006"}, false}, // connection failure
		{errors.New("unexpected EOF"), false},
		{partition.ErrFenced, false},
		{nil, false},
	} {
		if got := partition.IsPermanent(c.err); got != c.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func pool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	p, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if err := partition.Migrate(ctx, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// Two members divide the partitions (p mod 2 over sorted ids); when one
// stops heartbeating its partitions move to the other after the TTL, with a
// new epoch, and the old lease can no longer commit.
func TestLeasesMoveAndFence(t *testing.T) {
	ctx := context.Background()
	p := pool(t)
	const ttl = time.Second
	a := partition.NewCoordinator(p, "c", "a", 4, ttl)
	b := partition.NewCoordinator(p, "c", "b", 4, ttl)
	if _, err := a.Heartbeat(ctx); err != nil { // a alone: assigned everything
		t.Fatal(err)
	}
	if _, err := b.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	la, err := a.Heartbeat(ctx) // now a keeps 0 and 2
	if err != nil {
		t.Fatal(err)
	}
	if len(la) != 2 || la[0].Epoch != 1 || la[2].Epoch != 1 {
		t.Fatalf("a holds %v", la)
	}
	if err := a.Release(ctx, la); err != nil {
		t.Fatal(err)
	}
	lb, err := b.Heartbeat(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(lb) != 2 || lb[1].Epoch != 2 || lb[3].Epoch != 2 {
		t.Fatalf("b holds %v (1 and 3, taken from a: epoch 2)", lb)
	}
	commit := func(l partition.Lease, seq uint64) error {
		return pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error { return partition.Commit(ctx, tx, l, seq) })
	}
	if err := commit(la[0], 10); err != nil {
		t.Fatal(err)
	}
	// a dies: b takes 0 and 2 once a's membership and leases expire.
	deadline := time.Now().Add(5 * ttl)
	for len(lb) != 4 {
		if time.Now().After(deadline) {
			t.Fatalf("b holds %v after a died", lb)
		}
		time.Sleep(ttl / 4)
		if lb, err = b.Heartbeat(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if lb[0].Epoch != 2 {
		t.Fatalf("taken lease %v", lb[0])
	}
	if err := commit(la[0], 20); !errors.Is(err, partition.ErrFenced) {
		t.Fatalf("stale lease committed: %v", err)
	}
	if err := commit(lb[0], 20); err != nil {
		t.Fatal(err)
	}
	pos, err := partition.Positions(ctx, p, "c", 4)
	if err != nil {
		t.Fatal(err)
	}
	if pos[0] != 20 || pos[1] != 0 {
		t.Fatalf("positions %v", pos)
	}
}
