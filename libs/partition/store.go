package partition

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/eventbus"
)

const schema = `
CREATE TABLE IF NOT EXISTS partition_members (
	consumer   text NOT NULL,
	member     text NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (consumer, member)
);
CREATE TABLE IF NOT EXISTS partition_leases (
	consumer   text NOT NULL,
	partition  int NOT NULL,
	owner      text NOT NULL,
	epoch      bigint NOT NULL,
	expires_at timestamptz NOT NULL,
	PRIMARY KEY (consumer, partition)
);
CREATE TABLE IF NOT EXISTS partition_positions (
	consumer   text NOT NULL,
	partition  int NOT NULL,
	position   bigint NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, partition)
);
CREATE TABLE IF NOT EXISTS partition_held (
	consumer        text NOT NULL,
	tenant_id       text NOT NULL,
	conversation_id text NOT NULL,
	partition       int NOT NULL,
	blocked_seq     bigint NOT NULL,
	reason          text NOT NULL,
	held_at         timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (consumer, tenant_id, conversation_id)
);
ALTER TABLE partition_held ADD COLUMN IF NOT EXISTS replay boolean NOT NULL DEFAULT false;`

// Migrate creates the partition tables (idempotent). Concurrent replicas
// serialize on an advisory lock.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('parley partition schema'))`); err != nil {
			return fmt.Errorf("partition: migrate: %w", err)
		}
		if _, err := tx.Exec(ctx, schema); err != nil {
			return fmt.Errorf("partition: migrate: %w", err)
		}
		return nil
	})
}

// Lease is one replica's hold on a partition of a consumer.
type Lease struct {
	Consumer  string
	Partition int
	Owner     string
	Epoch     int64
}

// ErrFenced is returned by Commit when the lease was lost: another replica
// owns the partition now, the transaction must not commit.
var ErrFenced = errors.New("partition: lease lost")

// Commit records, in tx, that the lease's partition has applied everything
// up to seq. It fails with ErrFenced unless l is still the partition's
// current lease; the lease row stays locked until tx ends, so no other
// replica takes the partition in between.
func Commit(ctx context.Context, tx pgx.Tx, l Lease, seq uint64) error {
	var epoch int64
	err := tx.QueryRow(ctx, `SELECT epoch FROM partition_leases WHERE consumer = $1 AND partition = $2 AND owner = $3 FOR SHARE`,
		l.Consumer, l.Partition, l.Owner).Scan(&epoch)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && epoch != l.Epoch) {
		return ErrFenced
	}
	if err != nil {
		return fmt.Errorf("partition: commit: %w", err)
	}
	_, err = tx.Exec(ctx, `INSERT INTO partition_positions (consumer, partition, position) VALUES ($1, $2, $3)
		ON CONFLICT (consumer, partition) DO UPDATE SET position = GREATEST(partition_positions.position, EXCLUDED.position), updated_at = now()`,
		l.Consumer, l.Partition, int64(seq))
	if err != nil {
		return fmt.Errorf("partition: commit: %w", err)
	}
	return nil
}

// Querier is a pool or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Positions returns the committed position of each of the consumer's n
// partitions (0 for a partition that never committed).
func Positions(ctx context.Context, q Querier, consumer string, n int) ([]uint64, error) {
	out := make([]uint64, n)
	rows, err := q.Query(ctx, `SELECT partition, position FROM partition_positions WHERE consumer = $1`, consumer)
	if err != nil {
		return nil, fmt.Errorf("partition: positions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p int
		var pos int64
		if err := rows.Scan(&p, &pos); err != nil {
			return nil, fmt.Errorf("partition: positions: %w", err)
		}
		if p >= 0 && p < n {
			out[p] = uint64(pos)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("partition: positions: %w", err)
	}
	return out, nil
}

// Conversation names a tenant's conversation.
type Conversation struct{ TenantID, ConversationID string }

// Hold is a conversation held behind a dead-lettered event.
type Hold struct {
	Conversation
	Partition  int
	BlockedSeq uint64
	Reason     string
	// Replay is set by RequestReplay: the owner re-applies the
	// conversation's events from BlockedSeq, then removes the hold.
	Replay bool
}

// Held lists the consumer's held conversations.
func Held(ctx context.Context, q Querier, consumer string) (map[Conversation]Hold, error) {
	rows, err := q.Query(ctx, `SELECT tenant_id, conversation_id, partition, blocked_seq, reason, replay FROM partition_held WHERE consumer = $1`, consumer)
	if err != nil {
		return nil, fmt.Errorf("partition: held: %w", err)
	}
	defer rows.Close()
	out := map[Conversation]Hold{}
	for rows.Next() {
		var h Hold
		var seq int64
		if err := rows.Scan(&h.TenantID, &h.ConversationID, &h.Partition, &seq, &h.Reason, &h.Replay); err != nil {
			return nil, fmt.Errorf("partition: held: %w", err)
		}
		h.BlockedSeq = uint64(seq)
		out[h.Conversation] = h
	}
	return out, rows.Err()
}

func hold(ctx context.Context, tx pgx.Tx, consumer string, h Hold) error {
	_, err := tx.Exec(ctx, `INSERT INTO partition_held (consumer, tenant_id, conversation_id, partition, blocked_seq, reason)
		VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
		consumer, h.TenantID, h.ConversationID, h.Partition, int64(h.BlockedSeq), h.Reason)
	if err != nil {
		return fmt.Errorf("partition: hold: %w", err)
	}
	return nil
}

// IsPermanent reports whether err is a failure retrying cannot fix:
// eventbus.Permanent, or a PostgreSQL data error (SQLSTATE class 22, data
// exception, or 23, integrity constraint violation). Everything else
// (connection errors, timeouts, serialization failures) is transient.
func IsPermanent(err error) bool {
	if err == nil || errors.Is(err, ErrFenced) {
		return false
	}
	if eventbus.IsPermanent(err) {
		return true
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) && len(pg.Code) == 5 {
		switch pg.Code[:2] {
		case "22", "23":
			return true
		}
	}
	return false
}
