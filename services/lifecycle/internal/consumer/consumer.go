// Package consumer applies the conversation event log to lifecycle's state:
// libs/partition hands it batches of the partitions this replica owns, and
// each batch's state changes, derived events (outbox) and partition
// position are committed in one PostgreSQL transaction, fenced by the
// partition's lease.
package consumer

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/services/lifecycle/internal/machine"
	"github.com/parley-dev/parley/services/lifecycle/internal/outbox"
	"github.com/parley-dev/parley/services/lifecycle/internal/store"
)

// Durable is lifecycle's consumer name: its partition leases and positions,
// and its dead letters (parley.dlq.lifecycle).
const Durable = "lifecycle"

// Config configures a Consumer.
type Config struct {
	Store *store.Store
	Bus   *eventbus.Bus
	Relay *outbox.Relay
	// Pool is the database of the store (partition positions).
	Pool pgxQuerier
	// Partitions is the deployment's partition count.
	Partitions int
	// BatchSize is the most events applied in one transaction.
	BatchSize int
	Clock     func() time.Time
	Log       *slog.Logger
}

// Consumer applies the log to the state.
type Consumer struct {
	cfg Config

	mu sync.Mutex
	// horizon is the last stream sequence when the replica started: it
	// bounds the events that need loggedEnds' look-up. Set by Prepare.
	horizon  uint64
	prepared bool
}

// New returns a consumer.
func New(cfg Config) *Consumer {
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = partition.DefaultPartitions
	}
	return &Consumer{cfg: cfg}
}

type pgxQuerier = partition.Querier

// Prepare records the head of the log (the horizon loggedEnds needs) and
// removes the durable JetStream consumer of earlier versions, which read
// the log with acks; the partitioned consumer keeps its positions in
// PostgreSQL instead.
func (c *Consumer) Prepare(ctx context.Context) error {
	head, err := c.cfg.Bus.LastSequence(ctx)
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	c.mu.Lock()
	c.horizon, c.prepared = head, true
	c.mu.Unlock()
	if err := c.cfg.Bus.DeleteConsumer(ctx, Durable); err != nil {
		c.cfg.Log.WarnContext(ctx, "could not remove the old durable consumer", "err", err)
	}
	return nil
}

// CaughtUp reports whether every partition's committed position is
// within one batch of the head of the log. Events of the batch in flight
// are being applied under row locks, which the sweeper skips (SKIP
// LOCKED); the one-batch allowance keeps the sweeper from starving under
// steady traffic, where the consumer is never idle. An event the sweeper
// overtakes this way still counts: the log orders it before the sweep's
// conversation_ended (see machine.State.EndSeq).
func (c *Consumer) CaughtUp(ctx context.Context) (bool, error) {
	head, err := c.cfg.Bus.LastSequence(ctx)
	if err != nil {
		return false, fmt.Errorf("consumer: %w", err)
	}
	pos, err := partition.Positions(ctx, c.cfg.Pool, Durable, c.cfg.Partitions)
	if err != nil {
		return false, err
	}
	for _, p := range pos {
		if p+uint64(c.cfg.BatchSize) < head {
			return false, nil
		}
	}
	return true, nil
}

// WaitApplied waits until the partition of the tenant's conversation has
// committed the event at stream sequence seq (on whichever replica owns
// it), or ctx ends; it reports whether it has.
func (c *Consumer) WaitApplied(ctx context.Context, tenant, conversation string, seq uint64) bool {
	p := partition.Of(tenant, conversation, c.cfg.Partitions)
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		if pos, err := partition.Positions(ctx, c.cfg.Pool, Durable, c.cfg.Partitions); err == nil && pos[p] >= seq {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-poll.C:
		}
	}
}

// Handle is the partition.Handler: it applies a batch in one transaction
// together with the partition's new position (fenced by its lease), then
// kicks the outbox relay, which publishes the derived effects while the
// next batch is being applied: state, outbox and position are durable
// together, and the relay (or the next start) publishes what the outbox
// holds.
func (c *Consumer) Handle(ctx context.Context, pb partition.Batch) error {
	return c.apply(ctx, pb.Deliveries, []partition.Batch{pb})
}

// HandleRound is the partition.RoundHandler: as Handle, for the batches of
// every partition read in a round, in one transaction that commits all
// their positions. Partitions hold disjoint conversations, so each
// conversation's events stay in stream order.
func (c *Consumer) HandleRound(ctx context.Context, round []partition.Batch) error {
	if len(round) == 1 {
		return c.apply(ctx, round[0].Deliveries, round)
	}
	var batch []*eventbus.Delivery
	for _, b := range round {
		batch = append(batch, b.Deliveries...)
	}
	return c.apply(ctx, batch, round)
}

// apply applies batch (the deliveries of round) and commits round's
// positions in the same transaction.
func (c *Consumer) apply(ctx context.Context, batch []*eventbus.Delivery, round []partition.Batch) error {
	now := c.cfg.Clock()
	keys := make([]store.Key, 0, len(batch))
	seen := map[store.Key]bool{}
	var maxSeq uint64
	for _, d := range batch {
		k := store.Key{TenantID: d.Envelope.GetTenantId(), ConversationID: d.Envelope.GetConversationId()}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
		maxSeq = max(maxSeq, d.StreamSeq)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].TenantID != keys[j].TenantID {
			return keys[i].TenantID < keys[j].TenantID
		}
		return keys[i].ConversationID < keys[j].ConversationID
	})
	endedLater, err := c.loggedEnds(ctx, batch)
	if err != nil {
		return err
	}
	effects := 0
	err = c.cfg.Store.Tx(ctx, func(tx pgx.Tx) error {
		states, err := c.cfg.Store.LockStates(ctx, tx, keys)
		if err != nil {
			return err
		}
		var change store.Change
		dirty := map[store.Key]bool{}
		for _, d := range batch {
			env := d.Envelope
			if eventbus.Validate(env) != nil {
				c.cfg.Log.WarnContext(d.Context(ctx), "skipping an invalid envelope", "subject", d.Subject, "stream_seq", d.StreamSeq)
				continue
			}
			k := store.Key{TenantID: env.GetTenantId(), ConversationID: env.GetConversationId()}
			before := states[k]
			ev := machine.Event{Envelope: env, Seq: d.StreamSeq}
			ev.EndedLater = endedLater[d.StreamSeq]
			after, out := machine.Apply(before, ev, now)
			if after.AppliedSeq == before.AppliedSeq {
				continue // already applied
			}
			states[k], dirty[k] = after, true
			rows, err := outbox.Rows(after, out, env)
			if err != nil {
				return eventbus.Permanent(err)
			}
			change.Outbox = append(change.Outbox, rows...)
			effects += len(rows)
			if out.Late {
				c.cfg.Log.InfoContext(d.Context(ctx), "late event recorded", "tenant_id", k.TenantID, "conversation_id", k.ConversationID,
					"event_id", env.GetEventId(), "kind", eventbus.Kind(env))
			}
		}
		for _, k := range keys {
			if dirty[k] {
				change.States = append(change.States, states[k])
			}
		}
		change.Position = maxSeq
		if err := c.cfg.Store.Save(ctx, tx, change); err != nil {
			return err
		}
		return partition.CommitRound(ctx, tx, round)
	})
	if err != nil {
		return fmt.Errorf("consumer: apply batch: %w", err)
	}
	if effects > 0 {
		c.cfg.Relay.Kick()
	}
	return nil
}

// loggedEnds finds the conversation_closed events of the batch that must
// not end their conversation because the log already holds a later
// conversation_ended for it that another cause (a sweep, an administrator)
// produced. That only happens when the state is rebuilt from the log: the
// end the log records is then the authoritative one. The result is keyed by
// stream sequence (event ids are unique only within a tenant).
//
// Only events at or below the horizon (the stream's last sequence when the
// consumer started) are looked up. A later conversation_ended than a close
// appended after the start was itself appended after the start, and only
// lifecycle appends conversation_ended: from its outbox, which is committed to PostgreSQL together
// with the state that ended the conversation, before it is published. So
// when the consumer applies such a close (under the row lock that sweeps
// and commands take too), either that end is already in the state it reads
// (the close finds the conversation ended and ends nothing, whatever a
// look-up said), or it has not been decided and cannot be in the log (a
// look-up would find nothing). The look-up cannot change the outcome; it
// matters only for ends the log held before the start, which the database
// may not know (a rebuild from an empty database, a restore from a backup).
func (c *Consumer) loggedEnds(ctx context.Context, batch []*eventbus.Delivery) (map[uint64]bool, error) {
	c.mu.Lock()
	horizon, prepared := c.horizon, c.prepared
	c.mu.Unlock()
	var out map[uint64]bool
	for _, d := range batch {
		if d.Envelope.GetConversationClosed() == nil {
			continue
		}
		if prepared && d.StreamSeq > horizon {
			continue
		}
		if out == nil {
			out = map[uint64]bool{}
		}
		subject := eventbus.ConvSubject(d.Envelope.GetTenantId(), d.Envelope.GetConversationId(), "conversation_ended")
		m, found, err := c.cfg.Bus.LastOnSubject(ctx, subject)
		if err != nil {
			return nil, fmt.Errorf("consumer: look up conversation_ended: %w", err)
		}
		if !found || m.Sequence <= d.StreamSeq {
			continue
		}
		logged, err := m.Envelope()
		if err != nil {
			return nil, fmt.Errorf("consumer: %w", err)
		}
		if logged.GetCausationId() != d.Envelope.GetEventId() {
			out[d.StreamSeq] = true
		}
	}
	return out, nil
}
