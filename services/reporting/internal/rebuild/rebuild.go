// Package rebuild replays the whole event log into fresh ClickHouse tables
// and a fresh fold-state table, then swaps them in. Readers query the old
// tables until the swap, which is a single RENAME, so they never see a
// half-built projection.
//
// Any replica rebuilds, while every replica's live projector keeps
// projecting its partitions. Steps: create <table>_rebuild copies of the
// schema; replay the stream up to its last sequence at the start; lock the
// tables' generation row (reporting_projection, FOR UPDATE) in a
// PostgreSQL transaction, which stops every replica's projector from
// committing (each commit checks the generation FOR SHARE) until the swap
// is done; replay what arrived meanwhile, up to the stream's last sequence
// T taken under the lock; swap the ClickHouse tables, then, in the locked
// transaction, the fold-state table, and increment the generation.
//
// Positions stay consistent: a position committed before the lock covers
// events at or below T, which the new tables hold; a projector blocked on
// the lock wrote its rows to the old tables (or, after the rename, the new
// ones), finds the generation changed, fails transiently and projects
// again from its partition's stored position into the new tables. Events
// between that position and T are already there: projection is idempotent
// (fold states skip sequences they hold; rows replace by their keys), so
// nothing changes twice and nothing is lost.
package rebuild

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/services/reporting/internal/projector"
	"github.com/parley-dev/parley/services/reporting/internal/statestore"
)

// ErrBusy means another rebuild holds the lock.
var ErrBusy = errors.New("rebuild: another rebuild is running")

// lockKey is the PostgreSQL advisory lock that serialises rebuilds across
// replicas.
const lockKey = 0x7061726c6579 // "parley"

const suffix = "_rebuild"

// Progress is reported while a rebuild runs.
type Progress struct {
	// Phase is "replaying", "catching_up", "swapping" or "done".
	Phase          string
	Events         uint64
	Sequence       uint64
	TargetSequence uint64
	Elapsed        time.Duration
}

// EventsPerSecond is the replay rate so far.
func (p Progress) EventsPerSecond() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Events) / p.Elapsed.Seconds()
}

// Rebuilder runs rebuilds.
type Rebuilder struct {
	CH     driver.Conn
	PG     *pgxpool.Pool
	Bus    *eventbus.Bus
	States *statestore.Store
	Batch  int
	Log    *slog.Logger
}

// Run rebuilds every projection, calling progress at least every second
// and at each phase change.
func (r *Rebuilder) Run(ctx context.Context, progress func(Progress)) error {
	conn, err := r.PG.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	defer conn.Release()
	var locked bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, int64(lockKey)).Scan(&locked); err != nil {
		return fmt.Errorf("rebuild: lock: %w", err)
	}
	if !locked {
		return ErrBusy
	}
	defer func() { _, _ = conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(lockKey)) }()

	if err := r.prepare(ctx); err != nil {
		return err
	}
	tables := projector.LiveTables.Suffixed(suffix)
	states := r.States.WithTable(statestore.Table + suffix)
	proj := projector.New(r.CH, states, tables, r.Log)
	start := time.Now()
	p := Progress{Phase: "replaying"}
	last := time.Time{}
	report := func(force bool) {
		p.Elapsed = time.Since(start)
		if force || time.Since(last) >= time.Second {
			last = time.Now()
			progress(p)
		}
	}
	// replay projects with proj: on the pool at first, in the locked
	// transaction while catching up (blocked live projectors may hold the
	// pool's other connections).
	replay := func(to uint64, proj *projector.Projector) error {
		_, err := r.Bus.Replay(ctx, p.Sequence+1, to, r.Batch, nil, func(ctx context.Context, ds []*eventbus.Delivery) error {
			if err := proj.Handle(ctx, ds); err != nil {
				return err
			}
			p.Events += uint64(len(ds))
			p.Sequence = ds[len(ds)-1].StreamSeq
			report(false)
			return nil
		})
		return err
	}
	if p.TargetSequence, err = r.Bus.LastSequence(ctx); err != nil {
		return err
	}
	report(true)
	if err := replay(p.TargetSequence, proj); err != nil {
		return fmt.Errorf("rebuild: replay: %w", err)
	}
	// Stop every replica's projector from committing, take what arrived
	// meanwhile, swap.
	tx, err := r.PG.Begin(ctx)
	if err != nil {
		return fmt.Errorf("rebuild: pause live projectors: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := statestore.LockGeneration(ctx, tx); err != nil {
		return fmt.Errorf("rebuild: pause live projectors: %w", err)
	}
	p.Phase = "catching_up"
	if p.TargetSequence, err = r.Bus.LastSequence(ctx); err != nil {
		return err
	}
	report(true)
	if err := replay(p.TargetSequence, projector.New(r.CH, states.In(tx), tables, r.Log)); err != nil {
		return fmt.Errorf("rebuild: catch up: %w", err)
	}
	p.Phase = "swapping"
	report(true)
	if err := r.swap(ctx, tx); err != nil {
		return err
	}
	p.Phase = "done"
	report(true)
	return nil
}

// prepare creates empty copies of the live tables.
func (r *Rebuilder) prepare(ctx context.Context) error {
	live := projector.LiveTables
	for _, t := range live.All() {
		for _, q := range []string{`DROP TABLE IF EXISTS ` + t + suffix, `CREATE TABLE ` + t + suffix + ` AS ` + t} {
			if err := r.CH.Exec(ctx, q); err != nil {
				return fmt.Errorf("rebuild: %s: %w", q, err)
			}
		}
	}
	st := statestore.Table
	if _, err := r.PG.Exec(ctx, `DROP TABLE IF EXISTS `+st+suffix+`; CREATE TABLE `+st+suffix+` (LIKE `+st+` INCLUDING ALL)`); err != nil {
		return fmt.Errorf("rebuild: state table: %w", err)
	}
	return nil
}

// swap renames the rebuilt tables into place, increments the generation and
// commits tx (which holds the generation row), then drops the old tables.
func (r *Rebuilder) swap(ctx context.Context, tx pgx.Tx) error {
	live := projector.LiveTables
	names := live.All()
	rename := "RENAME TABLE "
	for i, t := range names {
		if i > 0 {
			rename += ", "
		}
		rename += t + " TO " + t + "_old, " + t + suffix + " TO " + t
	}
	for _, t := range names {
		if err := r.CH.Exec(ctx, `DROP TABLE IF EXISTS `+t+`_old`); err != nil {
			return fmt.Errorf("rebuild: drop %s_old: %w", t, err)
		}
	}
	if err := r.CH.Exec(ctx, rename); err != nil {
		return fmt.Errorf("rebuild: swap: %w", err)
	}
	st := statestore.Table
	if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+st+`_old; ALTER TABLE `+st+` RENAME TO `+st+`_old; ALTER TABLE `+st+suffix+` RENAME TO `+st+`; DROP TABLE `+st+`_old`); err != nil {
		return fmt.Errorf("rebuild: swap state: %w", err)
	}
	if err := statestore.BumpGeneration(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		// The ClickHouse tables are swapped, the state table is not:
		// running the rebuild again puts both in place.
		return fmt.Errorf("rebuild: swap state: %w", err)
	}
	for _, t := range names {
		if err := r.CH.Exec(ctx, `DROP TABLE IF EXISTS `+t+`_old`); err != nil {
			r.Log.Warn("rebuild: old table not dropped", "table", t+"_old", "err", err)
		}
	}
	return nil
}
