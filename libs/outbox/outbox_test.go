package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/outbox"
	"github.com/parley-dev/parley/libs/testenv"
)

type row struct {
	ID   int64
	Body string
}

// table is an outbox table on a throwaway PostgreSQL database.
type table struct{ pool *pgxpool.Pool }

func newTable(t *testing.T) table {
	t.Helper()
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, testenv.Postgres(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `CREATE TABLE outbox (id bigserial PRIMARY KEY, body text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	return table{pool}
}

func (tb table) add(t *testing.T, bodies ...string) {
	t.Helper()
	for _, b := range bodies {
		if _, err := tb.pool.Exec(context.Background(), `INSERT INTO outbox (body) VALUES ($1)`, b); err != nil {
			t.Fatal(err)
		}
	}
}

func (tb table) PendingOutbox(ctx context.Context, limit int) ([]row, error) {
	rows, err := tb.pool.Query(ctx, `SELECT id, body FROM outbox ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.ID, &r.Body); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (tb table) DeleteOutbox(ctx context.Context, ids []int64) error {
	_, err := tb.pool.Exec(ctx, `DELETE FROM outbox WHERE id = ANY($1)`, ids)
	return err
}

func (tb table) left(t *testing.T) []string {
	t.Helper()
	rows, err := tb.PendingOutbox(context.Background(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		out = append(out, r.Body)
	}
	return out
}

// TestDrainPagesInOrderAndKeepsFailures: every page is applied in id order,
// the rows done are deleted, and a failure keeps its row and the rows the
// apply did not report done.
func TestDrainPagesInOrderAndKeepsFailures(t *testing.T) {
	tb := newTable(t)
	tb.add(t, "a", "b", "c", "d", "e")
	var seen []string
	var pages int
	failOn := "d"
	apply := func(_ context.Context, rows []row) ([]int64, error) {
		pages++
		var done []int64
		for _, r := range rows {
			if r.Body == failOn {
				return done, errors.New("publish failed")
			}
			seen = append(seen, r.Body)
			done = append(done, r.ID)
		}
		return done, nil
	}
	r := outbox.New[row](tb, apply, outbox.Options{PageSize: 2})
	if err := r.Drain(context.Background()); err == nil {
		t.Fatal("drain hid the failure")
	}
	if fmt.Sprint(seen) != "[a b c]" || fmt.Sprint(tb.left(t)) != "[d e]" {
		t.Fatalf("applied %v, left %v; want [a b c], [d e]", seen, tb.left(t))
	}
	failOn = ""
	if err := r.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[a b c d e]" || len(tb.left(t)) != 0 {
		t.Fatalf("applied %v, left %v", seen, tb.left(t))
	}
	// First drain: [a b], then [c d] failing at d; second drain: [d e],
	// then an empty read that applies nothing.
	if pages != 3 {
		t.Fatalf("pages %d, want 3", pages)
	}
}

// TestRunDrainsAtStartOnKickAndAtShutdown: leftovers at start, a kicked
// drain, and what the last commits left once the context ends.
func TestRunDrainsAtStartOnKickAndAtShutdown(t *testing.T) {
	tb := newTable(t)
	tb.add(t, "leftover")
	var applied atomic.Int64
	apply := func(_ context.Context, rows []row) ([]int64, error) {
		var done []int64
		for _, r := range rows {
			done = append(done, r.ID)
		}
		applied.Add(int64(len(rows)))
		return done, nil
	}
	r := outbox.New[row](tb, apply, outbox.Options{DrainOnStart: true, ShutdownDrain: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { _ = r.Run(ctx, time.Hour); close(stopped) }()
	waitFor(t, func() bool { return applied.Load() == 1 }, "start drain")
	tb.add(t, "kicked")
	r.Kick()
	waitFor(t, func() bool { return applied.Load() == 2 }, "kicked drain")
	tb.add(t, "at shutdown")
	cancel()
	<-stopped
	if applied.Load() != 3 || len(tb.left(t)) != 0 {
		t.Fatalf("applied %d, left %v after shutdown", applied.Load(), tb.left(t))
	}
}

func waitFor(t *testing.T, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for the %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
