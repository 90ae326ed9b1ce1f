package consumer

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// LeaderLockKey is the PostgreSQL advisory lock that makes one tagging
// process at a time run live tagging ("tagging" in ASCII).
const LeaderLockKey int64 = 0x74616767696e67

// RunExclusive runs run only while this process holds the session-level
// advisory lock key on a dedicated connection, so that of several replicas
// exactly one consumes (live tagging applies each conversation's events in
// stream order, which two consumers sharing the durable would not). The
// others wait and take over within about retry once the holder stops or its
// connection dies; the holder checks its connection every retry and steps
// down (cancelling run, which finishes its batch) when it is lost. It
// returns when ctx is cancelled, or with run's error.
func RunExclusive(ctx context.Context, pool *pgxpool.Pool, key int64, retry time.Duration, log *slog.Logger, run func(context.Context) error) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	waiting := false
	for ctx.Err() == nil {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.WarnContext(ctx, "live tagging: cannot reach PostgreSQL for the leader lock; retrying", "err", err)
			}
			sleep(ctx, retry)
			continue
		}
		var held bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&held); err != nil || !held {
			conn.Release()
			if err == nil && !waiting {
				log.InfoContext(ctx, "live tagging: another replica consumes; standing by")
				waiting = true
			}
			sleep(ctx, retry)
			continue
		}
		waiting = false
		log.InfoContext(ctx, "live tagging: this replica consumes")
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- run(lctx) }()
		t := time.NewTicker(retry)
		var runErr error
		lost := false
	watch:
		for {
			select {
			case runErr = <-done:
				break watch
			case <-t.C:
				if err := conn.Ping(ctx); err != nil && ctx.Err() == nil {
					log.WarnContext(ctx, "live tagging: lost the leader lock's connection; stepping down", "err", err)
					lost = true
					cancel()
					runErr = <-done
					break watch
				}
			}
		}
		t.Stop()
		cancel()
		if lost {
			_ = conn.Hijack().Close(context.Background())
		} else {
			uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			_, _ = conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, key)
			ucancel()
			conn.Release()
		}
		if runErr != nil && ctx.Err() == nil {
			return runErr
		}
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
