package partition

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/parley-dev/parley/libs/eventbus"
)

// Groups lists the consumer groups that have taken partition leases in the
// database q (none when the partition tables do not exist). Read-only.
func Groups(ctx context.Context, q Querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT DISTINCT consumer FROM partition_leases ORDER BY consumer`)
	if err != nil {
		if undefinedTable(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("partition: groups: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("partition: groups: %w", err)
	}
	return out, nil
}

// GroupPartitions returns the partition count of a consumer group: one
// more than the highest partition it ever leased (every partition is
// leased once any member runs), 0 for an unknown group. Read-only.
func GroupPartitions(ctx context.Context, q Querier, consumer string) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT coalesce(max(partition) + 1, 0) FROM partition_leases WHERE consumer = $1`, consumer).Scan(&n)
	if err != nil {
		if undefinedTable(err) {
			return 0, nil
		}
		return 0, fmt.Errorf("partition: partitions: %w", err)
	}
	return n, nil
}

// Backlog returns how many events of stream the consumer group has still
// to apply: events after their partition's stored position. 0 means caught
// up: every partition's position is at the stream's last sequence or every
// later event belongs to other partitions. It reads the stream's subjects
// (headers only) from the lowest position on. known is false for a group
// that never leased a partition. Read-only.
func Backlog(ctx context.Context, bus *eventbus.Bus, q Querier, stream, consumer string) (n uint64, known bool, err error) {
	parts, err := GroupPartitions(ctx, q, consumer)
	if err != nil || parts == 0 {
		return 0, false, err
	}
	pos, err := Positions(ctx, q, consumer, parts)
	if err != nil {
		return 0, false, err
	}
	st, found, err := bus.StreamState(ctx, stream)
	if err != nil {
		return 0, false, fmt.Errorf("partition: backlog: %w", err)
	}
	if !found {
		return 0, false, fmt.Errorf("partition: backlog: stream %s does not exist", stream)
	}
	last := st.LastSeq
	low := pos[0]
	for _, p := range pos {
		low = min(low, p)
	}
	if low >= last {
		return 0, true, nil
	}
	r, err := bus.Read(ctx, eventbus.ReadOptions{Stream: stream, From: low + 1, HeadersOnly: true})
	if err != nil {
		return 0, false, fmt.Errorf("partition: backlog: %w", err)
	}
	for {
		done := false
		got, err := r.Fetch(1000, time.Second, func(m eventbus.LogMsg) error {
			done = m.Seq >= last || m.Pending == 0
			if m.Seq > last {
				return nil // appended after the last sequence was read
			}
			tenant, conv, _, perr := eventbus.ParseConvSubject(m.Subject)
			if perr != nil {
				return nil // not a conversation event: no consumer applies it
			}
			if m.Seq > pos[Of(tenant, conv, parts)] {
				n++
			}
			return nil
		})
		if err != nil {
			return 0, false, fmt.Errorf("partition: backlog: %w", err)
		}
		if done || got == 0 {
			return n, true, nil
		}
		if err := ctx.Err(); err != nil {
			return 0, false, err
		}
	}
}

// undefinedTable tells whether err is PostgreSQL's undefined_table
// (the partition tables were never migrated).
func undefinedTable(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && pg.Code == "42P01"
}
