// Package sweeper ends conversations nobody ended: those idle for longer
// than their session timeout (stale_timeout), and reports handoff requests
// no agent answered in time (operator_no_response). It reads only due rows
// through partial indexes, in pages, and changes them through the same
// transactional path as the consumer (state and outbox in one transaction,
// rows locked and re-checked), and only while the consumer has caught up
// with the log, so its decisions are based on every event appended so far.
package sweeper

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/lifecycle/internal/machine"
	"github.com/parley-dev/parley/services/lifecycle/internal/outbox"
	"github.com/parley-dev/parley/services/lifecycle/internal/store"
)

// PageSize is how many conversations one transaction changes.
const PageSize = 1000

// Config configures a Sweeper.
type Config struct {
	Store *store.Store
	Relay *outbox.Relay
	// CaughtUp reports whether the consumer has applied the whole log.
	CaughtUp func(context.Context) (bool, error)
	// HandoffTimeout is how long a handoff request may wait for an agent.
	HandoffTimeout time.Duration
	// Interval between sweeps.
	Interval time.Duration
	Clock    func() time.Time
	Log      *slog.Logger
}

// Sweeper ends stale conversations and reports unanswered handoffs.
type Sweeper struct{ cfg Config }

// New returns a sweeper.
func New(cfg Config) *Sweeper {
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Sweeper{cfg: cfg}
}

// Result counts what one sweep changed.
type Result struct {
	Ended, NoResponse int
	// Skipped: the consumer had not caught up; nothing was done.
	Skipped bool
}

// Run sweeps every Interval until ctx ends. A failed sweep is logged and
// retried at the next tick.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		res, err := s.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			s.cfg.Log.WarnContext(ctx, "sweep failed; will retry", "err", err)
		case res.Ended > 0 || res.NoResponse > 0:
			s.cfg.Log.InfoContext(ctx, "sweep", "ended_stale", res.Ended, "operator_no_response", res.NoResponse)
		}
	}
}

// Sweep runs one pass, if the consumer has caught up.
func (s *Sweeper) Sweep(ctx context.Context) (Result, error) {
	ok, err := s.cfg.CaughtUp(ctx)
	if err != nil {
		return Result{}, err
	}
	if !ok {
		return Result{Skipped: true}, nil
	}
	now := s.cfg.Clock()
	var res Result
	res.Ended, err = s.pages(ctx, func(tx pgx.Tx) ([]machine.State, error) {
		return s.cfg.Store.LockDueStale(ctx, tx, now, PageSize)
	}, func(st machine.State) (machine.State, machine.Output, bool) {
		return machine.End(st, machine.EndCommand{Reason: eventv1.EndReason_END_REASON_STALE_TIMEOUT, At: now}, now)
	})
	if err != nil {
		return res, err
	}
	res.NoResponse, err = s.pages(ctx, func(tx pgx.Tx) ([]machine.State, error) {
		return s.cfg.Store.LockDueNoResponse(ctx, tx, now.Add(-s.cfg.HandoffTimeout), PageSize)
	}, func(st machine.State) (machine.State, machine.Output, bool) {
		return machine.NoResponse(st, now)
	})
	return res, err
}

// EndIdle ends a tenant's active conversations idle for longer than idle
// (reason stale_timeout), whatever their session timeout, and returns how
// many it ended.
func (s *Sweeper) EndIdle(ctx context.Context, tenantID string, idle time.Duration) (int, error) {
	now := s.cfg.Clock()
	cutoff := now.Add(-idle)
	return s.pages(ctx, func(tx pgx.Tx) ([]machine.State, error) {
		return s.cfg.Store.LockIdle(ctx, tx, tenantID, cutoff, PageSize)
	}, func(st machine.State) (machine.State, machine.Output, bool) {
		return machine.End(st, machine.EndCommand{Reason: eventv1.EndReason_END_REASON_STALE_TIMEOUT, At: now}, now)
	})
}

// pages locks a page of rows, changes them and saves state and outbox in
// one transaction, drains the outbox, and repeats until a page is not full.
func (s *Sweeper) pages(ctx context.Context, lock func(pgx.Tx) ([]machine.State, error), step func(machine.State) (machine.State, machine.Output, bool)) (int, error) {
	total := 0
	for {
		n, full := 0, false
		err := s.cfg.Store.Tx(ctx, func(tx pgx.Tx) error {
			states, err := lock(tx)
			if err != nil {
				return err
			}
			full = len(states) == PageSize
			var change store.Change
			for _, st := range states {
				after, out, ok := step(st)
				if !ok {
					continue
				}
				rows, err := outbox.Rows(after, out, nil)
				if err != nil {
					return err
				}
				change.States = append(change.States, after)
				change.Outbox = append(change.Outbox, rows...)
				n++
			}
			return s.cfg.Store.Save(ctx, tx, change)
		})
		if err != nil {
			return total, fmt.Errorf("sweeper: %w", err)
		}
		total += n
		if n > 0 {
			if err := s.cfg.Relay.Drain(ctx); err != nil {
				s.cfg.Log.WarnContext(ctx, "derived events not published yet; the outbox will retry", "err", err)
				s.cfg.Relay.Kick()
			}
		}
		if !full || n == 0 {
			return total, nil
		}
	}
}
