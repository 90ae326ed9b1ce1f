// Package rebuild replays the whole event log into fresh ClickHouse tables
// and a fresh fold-state table, then swaps them in. Readers query the old
// tables until the swap, which is a single RENAME, so they never see a
// half-built projection.
//
// Steps: create <table>_rebuild copies of the schema; replay the stream up
// to its last sequence at the start; pause the live projector (it finishes
// and acknowledges its batch); replay what arrived meanwhile; swap the
// ClickHouse tables and the PostgreSQL state table; resume the live
// projector. The live projector then redelivers anything past its
// acknowledged position, which the new tables already hold: projection is
// idempotent, so nothing changes twice.
package rebuild

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/services/reporting/internal/projector"
	"github.com/parley-dev/parley/services/reporting/internal/statestore"
)

// ErrBusy means another rebuild holds the lock.
var ErrBusy = errors.New("rebuild: another rebuild is running")

// ErrStandby is returned on a replica that does not run the live projector
// (another replica does, under the leader lock): the rebuild must pause the
// live projector, so it runs on that replica.
var ErrStandby = errors.New("rebuild: this replica is standing by; the replica running the live projector rebuilds")

// lockKey is the PostgreSQL advisory lock that serialises rebuilds across
// replicas.
const lockKey = 0x7061726c6579 // "parley"

const suffix = "_rebuild"

// Live is the running projector, paused around the swap.
type Live interface {
	// Active reports whether the live projector runs in this process.
	Active() bool
	Pause(ctx context.Context) error
	Resume()
}

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
	Live   Live
	Batch  int
	Log    *slog.Logger
}

// Run rebuilds every projection, calling progress at least every second
// and at each phase change.
func (r *Rebuilder) Run(ctx context.Context, progress func(Progress)) error {
	if r.Live != nil && !r.Live.Active() {
		return ErrStandby
	}
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
	proj := projector.New(r.CH, r.States.WithTable(statestore.Table+suffix), tables, r.Log)
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
	replay := func(to uint64) error {
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
	if err := replay(p.TargetSequence); err != nil {
		return fmt.Errorf("rebuild: replay: %w", err)
	}
	// Pause the live projector, take what arrived meanwhile, swap.
	if err := r.Live.Pause(ctx); err != nil {
		return fmt.Errorf("rebuild: pause live projector: %w", err)
	}
	defer r.Live.Resume()
	p.Phase = "catching_up"
	if p.TargetSequence, err = r.Bus.LastSequence(ctx); err != nil {
		return err
	}
	report(true)
	if err := replay(p.TargetSequence); err != nil {
		return fmt.Errorf("rebuild: catch up: %w", err)
	}
	p.Phase = "swapping"
	report(true)
	if err := r.swap(ctx); err != nil {
		return err
	}
	p.Phase = "done"
	report(true)
	return nil
}

// prepare creates empty copies of the live tables.
func (r *Rebuilder) prepare(ctx context.Context) error {
	live := projector.LiveTables
	for _, t := range []string{live.Events, live.Messages, live.Conversations} {
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

// swap renames the rebuilt tables into place and drops the old ones.
func (r *Rebuilder) swap(ctx context.Context) error {
	live := projector.LiveTables
	names := []string{live.Events, live.Messages, live.Conversations}
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
	tx, err := r.PG.Begin(ctx)
	if err != nil {
		return fmt.Errorf("rebuild: swap state: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+st+`_old; ALTER TABLE `+st+` RENAME TO `+st+`_old; ALTER TABLE `+st+suffix+` RENAME TO `+st+`; DROP TABLE `+st+`_old`); err != nil {
		return fmt.Errorf("rebuild: swap state: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("rebuild: swap state: %w", err)
	}
	for _, t := range names {
		if err := r.CH.Exec(ctx, `DROP TABLE IF EXISTS `+t+`_old`); err != nil {
			r.Log.Warn("rebuild: old table not dropped", "table", t+"_old", "err", err)
		}
	}
	return nil
}
