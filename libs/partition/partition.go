// Package partition divides the conversation event log among the replicas of
// a consumer and makes its consumption exact under faults.
//
// # Partitions
//
// Every event belongs to one of N partitions, Of(tenant, conversation, N):
// FNV-1a (32 bit) of tenant followed by conversation, modulo N: the
// function of NATS's subject transform {{partition(N,1,2)}} over the
// subject's tenant and conversation tokens, so that the token can later be
// put into stored subjects by the stream without moving any conversation.
// N is fixed per deployment (PARLEY_PARTITIONS, default 16); all events of
// a conversation share a partition, so per-conversation order is the
// stream order within a partition.
//
// # Leases
//
// Replicas of one consumer (a Coordinator each, same consumer name, distinct
// member ids) heartbeat into partition_members every TTL/3 and assign
// partition p to the p mod m-th live member (sorted by id), m the number of
// live members. A member takes a partition's lease in partition_leases when
// the previous owner released it or let it expire; each take increments the
// lease's epoch (the fencing token). A replica that dies stops renewing: its
// members row and leases expire after the TTL and the others take over.
//
// # Positions and commits
//
// A consumer does not rely on acknowledgements or server-side redelivery.
// Each partition's position (the last stream sequence whose effect is
// committed) is stored in partition_positions, and the handler commits it
// with its effects in one PostgreSQL transaction through Commit, which
// checks the lease's epoch under a row lock: a replica that lost its lease
// cannot commit. Consume reads owned partitions with an ordered JetStream
// consumer (no acks, no redelivery) from the lowest owned position + 1.
//
// # Failures
//
// A transient failure (anything not permanent: a connection error, a store
// outage) pauses consumption: the session ends, Ready reports the error,
// and after a back-off the positions are read again and reading resumes
// from them. Nothing is skipped, no delivery count is spent, nothing is
// dead-lettered because of an outage.
//
// A permanent failure (eventbus.Permanent, a PostgreSQL data error of
// SQLSTATE class 22 or 23, an envelope that does not decode or does not
// match its subject) is isolated by bisection in stream order (a poison
// event costs O(log n) handler calls, the rest is still handled in
// batches), dead-lettered to PARLEY_DLQ with its reason, and its
// conversation is HELD: recorded in partition_held, and every later event of
// that conversation is dead-lettered too (reason: held behind the first)
// instead of being applied around it. Releasing a hold is an operator
// action (Release, `parleyctl partitions release`): a running consumer
// re-reads the held set with every heartbeat (TTL/3) and applies the
// conversation's later events again; the dead letters are republished by
// the operator.
//
// # Metrics
//
// With Config.Meter a consumer reports its owned partitions' positions and
// lag, the held count and its pauses (MetricPosition and the others).
//
// # Using it
//
// A service migrates the tables (Migrate) in the database of its state,
// builds a Coordinator and runs Consume with a Handler. The handler applies
// a Batch (events of one partition, in stream order) and, in the same
// transaction, calls Commit(ctx, tx, batch.Lease, batch.Last()). It returns
// nil only once committed; an error of Commit (ErrFenced) is returned as is.
// A consumer may also set Config.Round: a RoundHandler gets the events of
// every owned partition read in a round at once (one batch per partition)
// and commits all their positions with its effects in one transaction
// (CommitRound), one write per store per round instead of one per
// partition; the Handler stays the fallback for permanent failures.
// A handler whose effects live in another store (ClickHouse) commits the
// position in PostgreSQL after its effects are durable and must make its
// effects idempotent by stream sequence.
package partition

import (
	"hash/fnv"
)

// DefaultPartitions is the default partition count (PARLEY_PARTITIONS).
const DefaultPartitions = 16

// Of returns the partition, in [0, n), of a tenant's conversation.
func Of(tenant, conversation string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(tenant))
	_, _ = h.Write([]byte(conversation))
	return int(h.Sum32() % uint32(n))
}
