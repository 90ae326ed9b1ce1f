package partition

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Member is a replica's membership row.
type Member struct {
	Member    string
	ExpiresAt time.Time
	Alive     bool
}

// PartitionStatus is a partition's lease and stored position.
type PartitionStatus struct {
	Partition      int
	Owner          string
	Epoch          int64
	LeaseExpiresAt time.Time
	LeaseAlive     bool
	Position       uint64
}

// GroupStatus is a consumer group's members, partitions and held
// conversations.
type GroupStatus struct {
	Consumer   string
	Members    []Member
	Partitions []PartitionStatus
	Held       []Hold
}

// Status reads a consumer group's status. Read-only.
func Status(ctx context.Context, q Querier, consumer string) (GroupStatus, error) {
	st := GroupStatus{Consumer: consumer}
	rows, err := q.Query(ctx, `SELECT member, expires_at, expires_at > clock_timestamp() FROM partition_members WHERE consumer = $1 ORDER BY member`, consumer)
	if err != nil {
		return st, fmt.Errorf("partition: status: %w", err)
	}
	if st.Members, err = pgx.CollectRows(rows, pgx.RowToStructByPos[Member]); err != nil {
		return st, fmt.Errorf("partition: status: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT l.partition, l.owner, l.epoch, l.expires_at, l.expires_at > clock_timestamp(), coalesce(p.position, 0)
		FROM partition_leases l LEFT JOIN partition_positions p ON p.consumer = l.consumer AND p.partition = l.partition
		WHERE l.consumer = $1 ORDER BY l.partition`, consumer)
	if err != nil {
		return st, fmt.Errorf("partition: status: %w", err)
	}
	st.Partitions, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (PartitionStatus, error) {
		var ps PartitionStatus
		var pos int64
		err := r.Scan(&ps.Partition, &ps.Owner, &ps.Epoch, &ps.LeaseExpiresAt, &ps.LeaseAlive, &pos)
		ps.Position = uint64(pos)
		return ps, err
	})
	if err != nil {
		return st, fmt.Errorf("partition: status: %w", err)
	}
	rows, err = q.Query(ctx, `SELECT tenant_id, conversation_id, partition, blocked_seq, reason FROM partition_held
		WHERE consumer = $1 ORDER BY tenant_id, conversation_id`, consumer)
	if err != nil {
		return st, fmt.Errorf("partition: status: %w", err)
	}
	st.Held, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Hold, error) {
		var h Hold
		var seq int64
		err := r.Scan(&h.TenantID, &h.ConversationID, &h.Partition, &seq, &h.Reason)
		h.BlockedSeq = uint64(seq)
		return h, err
	})
	if err != nil {
		return st, fmt.Errorf("partition: status: %w", err)
	}
	return st, nil
}

// Release removes a tenant's conversation's hold in the consumer group: the
// group's replicas apply its later events again once they re-read the held
// set (within a third of the lease TTL). Events dead-lettered while it was
// held stay in PARLEY_DLQ. It returns the removed hold; ok is false when the
// conversation was not held.
func Release(ctx context.Context, q Querier, consumer string, c Conversation) (h Hold, ok bool, err error) {
	var seq int64
	err = q.QueryRow(ctx, `DELETE FROM partition_held WHERE consumer = $1 AND tenant_id = $2 AND conversation_id = $3
		RETURNING partition, blocked_seq, reason`, consumer, c.TenantID, c.ConversationID).Scan(&h.Partition, &seq, &h.Reason)
	if err == pgx.ErrNoRows {
		return Hold{}, false, nil
	}
	if err != nil {
		return Hold{}, false, fmt.Errorf("partition: release: %w", err)
	}
	h.Conversation, h.BlockedSeq = c, uint64(seq)
	return h, true, nil
}

// RequestReplay releases a tenant's conversation's hold in the consumer
// group with a replay: the replica owning its partition (within a third of
// the lease TTL) re-applies the conversation's events from the blocked
// sequence on, read from the stream in order, and only then removes the
// hold, so later events still follow them. An event that fails again
// holds the conversation anew. ok is false when the conversation was not
// held.
func RequestReplay(ctx context.Context, q Querier, consumer string, c Conversation) (h Hold, ok bool, err error) {
	var seq int64
	err = q.QueryRow(ctx, `UPDATE partition_held SET replay = true WHERE consumer = $1 AND tenant_id = $2 AND conversation_id = $3
		RETURNING partition, blocked_seq, reason`, consumer, c.TenantID, c.ConversationID).Scan(&h.Partition, &seq, &h.Reason)
	if err == pgx.ErrNoRows {
		return Hold{}, false, nil
	}
	if err != nil {
		return Hold{}, false, fmt.Errorf("partition: replay: %w", err)
	}
	h.Conversation, h.BlockedSeq, h.Replay = c, uint64(seq), true
	return h, true, nil
}
