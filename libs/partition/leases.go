package partition

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultLeaseTTL is how long a member and its leases live without a
// heartbeat (PARLEY_PARTITION_LEASE_TTL).
const DefaultLeaseTTL = 5 * time.Second

// Coordinator is one replica's membership of a consumer group.
type Coordinator struct {
	pool     *pgxpool.Pool
	consumer string
	member   string
	n        int
	ttl      time.Duration
}

// NewCoordinator returns the membership of member in consumer's group over
// n partitions; ttl is the lease lifetime (DefaultLeaseTTL when 0).
func NewCoordinator(pool *pgxpool.Pool, consumer, member string, n int, ttl time.Duration) *Coordinator {
	if n <= 0 {
		n = DefaultPartitions
	}
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	return &Coordinator{pool: pool, consumer: consumer, member: member, n: n, ttl: ttl}
}

// Partitions is the partition count.
func (c *Coordinator) Partitions() int { return c.n }

// Consumer is the consumer's name.
func (c *Coordinator) Consumer() string { return c.consumer }

// TTL is the lease lifetime.
func (c *Coordinator) TTL() time.Duration { return c.ttl }

// Heartbeat renews the membership and returns the leases this member holds
// after it: the partitions assigned to it that it already held or could
// take (free or expired). Partitions it holds that are now assigned to
// another member are not renewed and not returned: the caller stops
// handling them and calls Release.
func (c *Coordinator) Heartbeat(ctx context.Context) (map[int]Lease, error) {
	out := map[int]Lease{}
	ttl := c.ttl.Seconds()
	err := pgx.BeginFunc(ctx, c.pool, func(tx pgx.Tx) error {
		out = map[int]Lease{}
		if _, err := tx.Exec(ctx, `INSERT INTO partition_members (consumer, member, expires_at) VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))
			ON CONFLICT (consumer, member) DO UPDATE SET expires_at = EXCLUDED.expires_at`, c.consumer, c.member, ttl); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT member FROM partition_members WHERE consumer = $1 AND expires_at > clock_timestamp()`, c.consumer)
		if err != nil {
			return err
		}
		members, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		sort.Strings(members)
		me := sort.SearchStrings(members, c.member)
		for p := range c.n {
			if p%len(members) != me {
				continue
			}
			var epoch int64
			err := tx.QueryRow(ctx, `INSERT INTO partition_leases AS l (consumer, partition, owner, epoch, expires_at)
				VALUES ($1, $2, $3, 1, clock_timestamp() + make_interval(secs => $4))
				ON CONFLICT (consumer, partition) DO UPDATE SET owner = EXCLUDED.owner,
					epoch = CASE WHEN l.owner = EXCLUDED.owner THEN l.epoch ELSE l.epoch + 1 END,
					expires_at = EXCLUDED.expires_at
				WHERE l.owner = EXCLUDED.owner OR l.expires_at <= clock_timestamp()
				RETURNING epoch`, c.consumer, p, c.member, ttl).Scan(&epoch)
			if err == pgx.ErrNoRows {
				continue // still held by its previous owner
			}
			if err != nil {
				return err
			}
			out[p] = Lease{Consumer: c.consumer, Partition: p, Owner: c.member, Epoch: epoch}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("partition: heartbeat: %w", err)
	}
	return out, nil
}

// Release gives up the member's leases except those in keep, so that
// their new owners take them at once instead of after the TTL.
func (c *Coordinator) Release(ctx context.Context, keep map[int]Lease) error {
	parts := make([]int32, 0, len(keep))
	for p := range keep {
		parts = append(parts, int32(p))
	}
	_, err := c.pool.Exec(ctx, `UPDATE partition_leases SET expires_at = clock_timestamp()
		WHERE consumer = $1 AND owner = $2 AND NOT (partition = ANY($3))`, c.consumer, c.member, parts)
	if err != nil {
		return fmt.Errorf("partition: release: %w", err)
	}
	return nil
}

// Leave releases every lease and the membership (graceful shutdown).
func (c *Coordinator) Leave(ctx context.Context) error {
	if err := c.Release(ctx, nil); err != nil {
		return err
	}
	_, err := c.pool.Exec(ctx, `DELETE FROM partition_members WHERE consumer = $1 AND member = $2`, c.consumer, c.member)
	if err != nil {
		return fmt.Errorf("partition: leave: %w", err)
	}
	return nil
}
