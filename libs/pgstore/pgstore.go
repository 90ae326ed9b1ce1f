// Package pgstore connects to PostgreSQL with pgx and applies a component's
// goose migrations. Each component keeps its own migration version table, so
// services can share a database and still evolve their schemas independently.
package pgstore

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/parley-dev/parley/libs/config"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

// Config parses cfg into a pool configuration. TLS settings travel in the
// URL (sslmode, sslrootcert, sslcert, sslkey) and are applied by pgx.
func Config(cfg config.Postgres) (*pgxpool.Config, error) {
	pc, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// pgx masks the password in its parse errors.
		return nil, fmt.Errorf("pgstore: PARLEY_POSTGRES_URL: %w", err)
	}
	if cfg.MaxConns > 0 {
		pc.MaxConns = cfg.MaxConns
	}
	return pc, nil
}

// Connect opens a pool and checks that the server answers.
func Connect(ctx context.Context, cfg config.Postgres) (*pgxpool.Pool, error) {
	pc, err := Config(cfg)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: ping %s@%s: %w", pc.ConnConfig.User, pc.ConnConfig.Host, err)
	}
	return pool, nil
}

// Migrate applies the migrations in fsys (goose SQL files at its root),
// recording versions in the table named versionTable. Concurrent callers are
// serialised by a PostgreSQL advisory lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, versionTable string, log *slog.Logger) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName(versionTable),
		goose.WithSessionLocker(locker),
		goose.WithDisableGlobalRegistry(true),
	)
	if err != nil {
		return fmt.Errorf("pgstore: migrations %s: %w", versionTable, err)
	}
	results, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: migrate %s: %w", versionTable, err)
	}
	for _, r := range results {
		if log != nil {
			log.Info("migration applied", "table", versionTable, "version", r.Source.Version, "file", r.Source.Path, "duration", r.Duration)
		}
	}
	return nil
}

// WithLock runs fn while holding the PostgreSQL session advisory lock key
// (waiting for it), so that one replica at a time does what fn does:
// e.g. migrating a store that has no locking of its own (ClickHouse).
func WithLock(ctx context.Context, pool *pgxpool.Pool, key int64, fn func(context.Context) error) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pgstore: lock %d: %w", key, err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return fmt.Errorf("pgstore: lock %d: %w", key, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, key); err != nil {
			// The session's lock ends with the connection.
			conn.Conn().Close(uctx) //nolint:errcheck
		}
	}()
	return fn(ctx)
}
