package api

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/partition"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"google.golang.org/grpc/status"
)

// DefaultMaxFreshnessWait bounds how long a request's min_sequence waits
// when the configuration sets no other bound.
const DefaultMaxFreshnessWait = 10 * time.Second

// LastSequencer tells the event log's last sequence (eventbus.Bus).
type LastSequencer interface {
	LastSequence(ctx context.Context) (uint64, error)
}

// Watermark reads how far the projector has applied the log: the lowest
// committed position of its partitions in PostgreSQL.
type Watermark struct {
	Positions  partition.Querier
	Log        LastSequencer
	Consumer   string
	Partitions int
	// MaxWait bounds a min_sequence wait (DefaultMaxFreshnessWait when 0);
	// the request's deadline bounds it too.
	MaxWait time.Duration
	// Poll is the interval between reads while waiting (25ms when 0).
	Poll time.Duration
	// Lookup bounds each read of the log's last sequence or of the
	// positions (2s when 0): an unreachable log never hangs a query.
	Lookup time.Duration
	Logger *slog.Logger
}

func (w *Watermark) bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	d := w.Lookup
	if d <= 0 {
		d = 2 * time.Second
	}
	return context.WithTimeout(ctx, d)
}

// last returns the log's last sequence.
func (w *Watermark) last(ctx context.Context) (uint64, error) {
	ctx, cancel := w.bounded(ctx)
	defer cancel()
	return w.Log.LastSequence(ctx)
}

// applied returns the lowest committed position over every partition.
func (w *Watermark) applied(ctx context.Context) (uint64, error) {
	ctx, cancel := w.bounded(ctx)
	defer cancel()
	pos, err := partition.Positions(ctx, w.Positions, w.Consumer, w.Partitions)
	if err != nil {
		return 0, err
	}
	if len(pos) == 0 {
		return 0, nil
	}
	return slices.Min(pos), nil
}

// Read returns the projection's freshness now.
func (w *Watermark) Read(ctx context.Context) (*reportingv1.Freshness, error) {
	last, err := w.last(ctx)
	if err != nil {
		return nil, w.unavailable(ctx, "event log", err)
	}
	applied, err := w.applied(ctx)
	if err != nil {
		return nil, w.unavailable(ctx, "projection positions", err)
	}
	// A position can pass the last sequence read a moment earlier.
	last = max(last, applied)
	return &reportingv1.Freshness{AppliedSequence: applied, LastSequence: last, Lag: partition.Lag(last, applied)}, nil
}

// Wait returns once the projection has applied min (at once when 0). It
// gives up after MaxWait (Unavailable, retryable) or the request's
// deadline; a sequence beyond the log's end is InvalidArgument.
func (w *Watermark) Wait(ctx context.Context, min uint64) error {
	if min == 0 {
		return nil
	}
	last, err := w.last(ctx)
	if err != nil {
		return w.unavailable(ctx, "event log", err)
	}
	if min > last {
		return grpcx.Invalid("min_sequence", fmt.Sprintf("beyond the event log's last sequence %d; pass a sequence an append returned", last))
	}
	maxWait, poll := w.MaxWait, w.Poll
	if maxWait <= 0 {
		maxWait = DefaultMaxFreshnessWait
	}
	if poll <= 0 {
		poll = 25 * time.Millisecond
	}
	give := time.Now().Add(maxWait)
	var applied uint64
	for {
		if applied, err = w.applied(ctx); err != nil {
			return w.unavailable(ctx, "projection positions", err)
		}
		if applied >= min {
			return nil
		}
		if time.Now().After(give) {
			return grpcx.Unavailablef("the projection has applied the log up to sequence %d, not yet %d, after waiting %s; retry", applied, min, maxWait)
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-time.After(poll):
		}
	}
}

func (w *Watermark) unavailable(ctx context.Context, what string, err error) error {
	if ctx.Err() != nil {
		return status.FromContextError(ctx.Err()).Err()
	}
	w.Logger.ErrorContext(ctx, "freshness check failed", "what", what, "err", err)
	return grpcx.Unavailable("projection state unavailable; retry later")
}
