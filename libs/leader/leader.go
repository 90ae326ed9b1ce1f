// Package leader runs a piece of work on exactly one of several replicas,
// elected with a PostgreSQL session-level advisory lock: consumers that must
// apply a conversation's events in stream order (two replicas sharing a
// durable consumer would not) run under it, and the other replicas stand by
// and take over within a retry interval when the leader stops or loses its
// connection.
package leader

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Key derives a lock key from a name (its first eight bytes, big-endian),
// so that each service's lock is distinct and recognisable in pg_locks.
func Key(name string) int64 {
	var k int64
	for i := 0; i < 8 && i < len(name); i++ {
		k = k<<8 | int64(name[i])
	}
	return k
}

// Run runs run only while this process holds the session-level advisory
// lock key on a dedicated connection, so that of several replicas exactly
// one runs it. The others wait and take over within about retry once the
// holder stops or its connection dies; the holder checks its connection
// every retry and steps down (cancelling run, which should finish what it
// has in hand) when it is lost. name labels the log lines. Run returns when
// ctx is cancelled, or with run's error.
func Run(ctx context.Context, pool *pgxpool.Pool, key int64, retry time.Duration, name string, log *slog.Logger, run func(context.Context) error) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	waiting := false
	for ctx.Err() == nil {
		conn, err := pool.Acquire(ctx)
		if err != nil {
			if ctx.Err() == nil {
				log.WarnContext(ctx, name+": cannot reach PostgreSQL for the leader lock; retrying", "err", err)
			}
			sleep(ctx, retry)
			continue
		}
		var held bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&held); err != nil || !held {
			conn.Release()
			if err == nil && !waiting {
				log.InfoContext(ctx, name+": another replica runs it; standing by")
				waiting = true
			}
			sleep(ctx, retry)
			continue
		}
		waiting = false
		log.InfoContext(ctx, name+": this replica runs it")
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
					log.WarnContext(ctx, name+": lost the leader lock's connection; stepping down", "err", err)
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
