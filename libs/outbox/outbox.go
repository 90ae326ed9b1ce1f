// Package outbox is the relay core every service's transactional outbox
// shares: a service writes the events it derives to its outbox table in the
// transaction that changes its state; the relay reads the pending rows a
// page at a time in id order, hands each page to the service's apply
// function (publishing, with deterministic event ids so a retry is stored
// once), deletes the rows done and keeps the rest for a retry. It drains
// when kicked (after each commit), every interval (leftovers after a crash
// or a failed publish), optionally at start and, bounded, at shutdown.
package outbox

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Store is a service's outbox table.
type Store[R any] interface {
	// PendingOutbox returns up to limit rows in id order.
	PendingOutbox(ctx context.Context, limit int) ([]R, error)
	// DeleteOutbox removes the rows with these ids.
	DeleteOutbox(ctx context.Context, ids []int64) error
}

// ApplyFunc applies a page of rows (in id order) and returns the ids of the
// rows done and the first failure. Rows it does not return stay pending.
type ApplyFunc[R any] func(ctx context.Context, rows []R) (done []int64, failed error)

// Options configure a Relay.
type Options struct {
	// PageSize is the most rows one apply step gets (default 500).
	PageSize int
	// DrainOnStart drains leftovers as soon as Run starts.
	DrainOnStart bool
	// ShutdownDrain, when positive, bounds a last drain after Run's context
	// ends (what the last commits left), run on a context without its
	// cancellation.
	ShutdownDrain time.Duration
	Log           *slog.Logger
}

// Relay drains one outbox. Drains never overlap.
type Relay[R any] struct {
	store Store[R]
	apply ApplyFunc[R]
	opts  Options
	mu    sync.Mutex
	kick  chan struct{}
}

// New returns a relay of store applying pages with apply.
func New[R any](store Store[R], apply ApplyFunc[R], opts Options) *Relay[R] {
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Relay[R]{store: store, apply: apply, opts: opts, kick: make(chan struct{}, 1)}
}

// Kick asks Run to drain now. Kicks while a drain is running are folded
// into one more drain after it.
func (r *Relay[R]) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Drain applies every pending row, a page at a time, deleting the rows
// done. It returns the apply failure after deleting what its page did.
func (r *Relay[R]) Drain(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		rows, err := r.store.PendingOutbox(ctx, r.opts.PageSize)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		done, failed := r.apply(ctx, rows)
		if len(done) > 0 {
			if err := r.store.DeleteOutbox(ctx, done); err != nil {
				return err
			}
		}
		if failed != nil {
			return failed
		}
		if len(rows) < r.opts.PageSize {
			return nil
		}
	}
}

// Run drains when kicked and every interval (default 2s) until ctx ends,
// then runs the shutdown drain if configured. A failed drain is logged and
// retried.
func (r *Relay[R]) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	if r.opts.DrainOnStart {
		r.drainLogged(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			if r.opts.ShutdownDrain > 0 {
				sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.ShutdownDrain)
				if err := r.Drain(sctx); err != nil {
					r.opts.Log.Warn("outbox: drain at shutdown failed; rows stay for the next start", "err", err)
				}
				cancel()
			}
			return nil
		case <-t.C:
		case <-r.kick:
		}
		r.drainLogged(ctx)
	}
}

func (r *Relay[R]) drainLogged(ctx context.Context) {
	if err := r.Drain(ctx); err != nil && ctx.Err() == nil {
		r.opts.Log.WarnContext(ctx, "outbox: rows not applied yet; will retry", "err", err)
	}
}
