package partition

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/eventbus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/sync/errgroup"
)

// Batch is events of one partition, in stream order, handed to a Handler.
type Batch struct {
	// Lease is the fencing token the handler passes to Commit.
	Lease      Lease
	Deliveries []*eventbus.Delivery
}

// Last is the stream sequence of the batch's last event: the position the
// handler commits.
func (b Batch) Last() uint64 { return b.Deliveries[len(b.Deliveries)-1].StreamSeq }

// Handler applies a batch and, in the same transaction, commits
// Commit(ctx, tx, b.Lease, b.Last()). It must accept any subsequence of a
// batch in stream order (bisection). A permanent error (IsPermanent)
// dead-letters the failing event and holds its conversation; any other
// error pauses the consumer, which resumes from the stored positions.
type Handler func(ctx context.Context, b Batch) error

// RoundHandler applies the batches of several partitions read in one round
// (each in stream order, one batch per partition) together and, in the same
// transaction, commits every batch's position (CommitRound). A permanent
// error makes the consumer hand the same events to the Handler partition by
// partition, which isolates the failing event (bisection); any other error
// pauses the consumer. An error of Commit (ErrFenced) is returned as is:
// nothing of the round is committed.
type RoundHandler func(ctx context.Context, round []Batch) error

// CommitRound commits the position of every batch of a round in tx (Commit
// each): one lost lease fails the whole transaction with ErrFenced.
func CommitRound(ctx context.Context, tx pgx.Tx, round []Batch) error {
	for _, b := range round {
		if err := Commit(ctx, tx, b.Lease, b.Last()); err != nil {
			return err
		}
	}
	return nil
}

// Handlers returns a consumer's Handler and RoundHandler as Run and
// Config.Round take them: round is dropped when perPartition is set, and
// wrap (fault injection in tests), when set, wraps h and checks each batch
// of a round before round handles it.
func Handlers(h Handler, round RoundHandler, perPartition bool, wrap func(Handler) Handler) (Handler, RoundHandler) {
	if perPartition {
		round = nil
	}
	if wrap == nil {
		return h, round
	}
	if round != nil {
		check, inner := wrap(func(context.Context, Batch) error { return nil }), round
		round = func(ctx context.Context, bs []Batch) error {
			for _, b := range bs {
				if err := check(ctx, b); err != nil {
					return err
				}
			}
			return inner(ctx, bs)
		}
	}
	return wrap(h), round
}

// Config configures a Consumer.
type Config struct {
	Bus *eventbus.Bus
	// Pool is the database of the handler's state and of the partition
	// tables.
	Pool        *pgxpool.Pool
	Coordinator *Coordinator
	// Stream defaults to PARLEY_CONV.
	Stream string
	// BatchSize is the most events read before they are handled (default 500).
	BatchSize int
	// MaxWait is how long a read waits to fill a batch (default 250ms).
	MaxWait time.Duration
	// Retry is the pause after a transient failure (default 1s).
	Retry time.Duration
	// Parallel is how many partitions' batches are handled at once
	// (default 4); the handler is called concurrently for different
	// partitions, never for one partition.
	Parallel int
	// Round, when set, receives the events of all owned partitions read in
	// a round at once (up to BatchSize events), so that their effects and
	// positions take one write per store instead of one per partition; the
	// Handler given to Run remains the fallback for permanent failures and
	// for events behind a dead-lettered or held one. Unset: every
	// partition's batch goes to the Handler.
	Round RoundHandler
	Log   *slog.Logger
	// Meter, when set, receives the partition metrics (see MetricPosition).
	Meter metric.Meter
}

// Consumer consumes the partitions a Coordinator holds.
type Consumer struct {
	cfg Config

	mu  sync.Mutex
	err error

	gauges gauges
	pauses metric.Int64Counter
}

// NewConsumer returns a consumer; Run starts it.
func NewConsumer(cfg Config) *Consumer {
	if cfg.Stream == "" {
		cfg.Stream = eventbus.ConvStream
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 250 * time.Millisecond
	}
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 4
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Consumer{cfg: cfg}
	c.pauses = c.gauges.register(cfg.Meter, cfg.Coordinator.Consumer())
	return c
}

// Ready is a readiness check: it fails while the consumer is paused by a
// transient failure (its store or the event log is unreachable).
func (c *Consumer) Ready(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return fmt.Errorf("consumer %s paused", c.cfg.Coordinator.Consumer())
	}
	return nil
}

func (c *Consumer) setErr(err error) {
	c.mu.Lock()
	c.err = err
	c.mu.Unlock()
}

// Leave gives up this replica's partitions at once (graceful shutdown,
// after Run returned); without it they move after the lease TTL.
func (c *Consumer) Leave(ctx context.Context) error { return c.cfg.Coordinator.Leave(ctx) }

var errRebalance = errors.New("partition: assignment changed")

// Run consumes until ctx ends. Events read but not committed when ctx ends
// are read again by whoever owns their partition next.
func (c *Consumer) Run(ctx context.Context, h Handler) error {
	co := c.cfg.Coordinator
	var leases map[int]Lease
	for ctx.Err() == nil {
		if leases == nil {
			var err error
			if leases, err = co.Heartbeat(ctx); err != nil {
				c.pause(ctx, err)
				continue
			}
		}
		if len(leases) == 0 {
			c.setErr(nil)
			c.gauges.set(nil, nil, 0) // owns no partition: reports none
			sleep(ctx, co.TTL()/3)
			leases = nil
			continue
		}
		next, err := c.session(ctx, leases, h)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, errRebalance):
			if rerr := co.Release(ctx, next); rerr != nil {
				c.pause(ctx, rerr)
				next = nil
			}
		case errors.Is(err, ErrFenced):
			c.cfg.Log.WarnContext(ctx, "partition lease lost; rebalancing", "consumer", co.Consumer())
		default:
			c.pause(ctx, err)
		}
		leases = next
	}
	return nil
}

func (c *Consumer) pause(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	c.setErr(err)
	if c.pauses != nil {
		c.pauses.Add(ctx, 1, metric.WithAttributes(attribute.String("consumer", c.cfg.Coordinator.Consumer())))
	}
	c.cfg.Log.WarnContext(ctx, "consumer paused; resuming from its stored positions", "consumer", c.cfg.Coordinator.Consumer(), "err", err)
	sleep(ctx, c.cfg.Retry)
}

// item is one event read for an owned partition.
type item struct {
	d   *eventbus.Delivery
	msg eventbus.LogMsg
	seq uint64
	// bad is why the message cannot be handed to the handler (it does not
	// decode or does not match its subject).
	bad error
}

func (it item) conversation() (Conversation, bool) {
	if it.d == nil {
		return Conversation{}, false
	}
	return Conversation{it.d.Envelope.GetTenantId(), it.d.Envelope.GetConversationId()}, true
}

// session reads the owned partitions from their stored positions until ctx
// ends, the assignment changes (errRebalance, with the new leases) or a
// failure.
type session struct {
	c      *Consumer
	h      Handler
	leases map[int]Lease
	// pos is indexed by partition: each index is written only by the
	// goroutine handling that partition.
	pos []uint64

	mu   sync.Mutex
	held map[Conversation]Hold
}

func (c *Consumer) session(ctx context.Context, leases map[int]Lease, h Handler) (map[int]Lease, error) {
	co := c.cfg.Coordinator
	pos, err := Positions(ctx, c.cfg.Pool, co.Consumer(), co.Partitions())
	if err != nil {
		return nil, err
	}
	held, err := Held(ctx, c.cfg.Pool, co.Consumer())
	if err != nil {
		return nil, err
	}
	c.setErr(nil)
	s := &session{c: c, h: h, leases: leases, pos: pos, held: held}
	if err := s.replays(ctx); err != nil {
		return nil, err
	}
	c.gauges.set(leases, pos, len(held))
	start := uint64(0)
	first := true
	for p := range leases {
		if first || pos[p] < start {
			start, first = pos[p], false
		}
	}
	r, err := c.cfg.Bus.Read(ctx, eventbus.ReadOptions{Stream: c.cfg.Stream, From: start + 1})
	if err != nil {
		return nil, err
	}
	pending := map[int][]item{}
	count, fullest := 0, 0
	var lastRead, advanced uint64
	var advancedAt time.Time
	beat := time.Now().Add(co.TTL() / 3)
	for ctx.Err() == nil {
		if time.Now().After(beat) {
			next, err := co.Heartbeat(ctx)
			if err != nil {
				return nil, err
			}
			if !sameLeases(next, leases) {
				return next, errRebalance
			}
			// Re-read the held set: an operator's release (partition
			// Release) takes effect within TTL/3 without a restart.
			held, err := Held(ctx, c.cfg.Pool, co.Consumer())
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			s.held = held
			s.mu.Unlock()
			if err := s.replays(ctx); err != nil {
				return nil, err
			}
			beat = time.Now().Add(co.TTL() / 3)
		}
		n, err := r.Fetch(c.cfg.BatchSize, c.cfg.MaxWait, func(m eventbus.LogMsg) error {
			seq := m.Seq
			lastRead = seq
			c.gauges.seen(seq + m.Pending)
			tenant, conv, _, perr := eventbus.ParseConvSubject(m.Subject)
			if perr != nil {
				return nil // not a conversation event
			}
			p := Of(tenant, conv, co.Partitions())
			if _, ok := leases[p]; !ok || seq <= s.pos[p] {
				return nil
			}
			it := item{msg: m, seq: seq}
			it.d, it.bad = c.cfg.Bus.Decode(m)
			pending[p] = append(pending[p], it)
			count++
			fullest = max(fullest, len(pending[p]))
			return nil
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil
			}
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, nil
		}
		if n == c.cfg.BatchSize && fullest < c.cfg.BatchSize && count < c.limit() {
			// More to read before handling: a partition's batch fills up
			// to BatchSize while Parallel partitions are handled at once
			// (a round: up to BatchSize events of all partitions).
			continue
		}
		if err := s.handle(ctx, pending); err != nil {
			return nil, err
		}
		clear(pending)
		count, fullest = 0, 0
		if lastRead > advanced && (n < c.cfg.BatchSize || time.Since(advancedAt) >= time.Second) {
			// Everything owned up to lastRead is handled: record it as
			// every owned partition's position, so that positions tell
			// how far behind the head of the log each partition is.
			if err := s.advance(ctx, lastRead); err != nil {
				return nil, err
			}
			advanced, advancedAt = lastRead, time.Now()
		}
		s.mu.Lock()
		c.gauges.set(leases, s.pos, len(s.held))
		s.mu.Unlock()
	}
	return nil, nil
}

// limit is the most events of all partitions read before they are handled.
func (c *Consumer) limit() int {
	if c.cfg.Round != nil {
		return c.cfg.BatchSize
	}
	return c.cfg.BatchSize * c.cfg.Parallel
}

// handle runs the pending items: first a round (Config.Round) of every
// partition's leading good items, then each partition's remaining items,
// up to Parallel partitions at once; it returns the first failure once all
// have stopped.
func (s *session) handle(ctx context.Context, pending map[int][]item) error {
	if s.c.cfg.Round != nil {
		if err := s.round(ctx, pending); err != nil {
			return err
		}
	}
	parts := make([]int, 0, len(pending))
	for p, items := range pending {
		if len(items) > 0 {
			parts = append(parts, p)
		}
	}
	sort.Ints(parts)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.c.cfg.Parallel)
	for _, p := range parts {
		g.Go(func() error { return s.run(gctx, s.leases[p], pending[p]) })
	}
	return g.Wait()
}

// round hands the leading good items of every pending partition (up to its
// first bad or held item) to the round handler at once and, once they are
// committed, removes them from pending. After a permanent failure pending
// is left as it is: the per-partition path applies it exactly once and
// isolates the failing event.
func (s *session) round(ctx context.Context, pending map[int][]item) error {
	parts := make([]int, 0, len(pending))
	for p := range pending {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	round := make([]Batch, 0, len(parts))
	for _, p := range parts {
		items := pending[p]
		j := 0
		for j < len(items) && items[j].bad == nil && !s.isHeld(items[j]) {
			j++
		}
		if j == 0 {
			continue
		}
		ds := make([]*eventbus.Delivery, j)
		for i, it := range items[:j] {
			ds[i] = it.d
		}
		round = append(round, Batch{Lease: s.leases[p], Deliveries: ds})
	}
	if len(round) == 0 {
		return nil
	}
	err := s.c.cfg.Round(ctx, round)
	if IsPermanent(err) {
		s.c.cfg.Log.DebugContext(ctx, "round refused; applying it partition by partition", "consumer", s.c.cfg.Coordinator.Consumer(), "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	for _, b := range round {
		p := b.Lease.Partition
		s.pos[p] = max(s.pos[p], b.Last())
		pending[p] = pending[p][len(b.Deliveries):]
	}
	return nil
}

func sameLeases(a, b map[int]Lease) bool {
	if len(a) != len(b) {
		return false
	}
	for p, l := range a {
		if b[p] != l {
			return false
		}
	}
	return true
}

// advance commits seq as the position of every owned partition behind it.
func (s *session) advance(ctx context.Context, seq uint64) error {
	err := pgx.BeginFunc(ctx, s.c.cfg.Pool, func(tx pgx.Tx) error {
		for p, l := range s.leases {
			if s.pos[p] < seq {
				if err := Commit(ctx, tx, l, seq); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for p := range s.leases {
		s.pos[p] = max(s.pos[p], seq)
	}
	return nil
}

func (s *session) isHeld(it item) bool {
	k, ok := it.conversation()
	if !ok {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, held := s.held[k]
	return held
}

// run handles items of one partition in stream order: maximal runs of
// good events go to the handler together, a bad or held event is
// dead-lettered on its own.
func (s *session) run(ctx context.Context, l Lease, items []item) error {
	for len(items) > 0 {
		if items[0].bad != nil || s.isHeld(items[0]) {
			if err := s.reject(ctx, l, items[0], items[0].bad); err != nil {
				return err
			}
			items = items[1:]
			continue
		}
		j := 1
		for j < len(items) && items[j].bad == nil && !s.isHeld(items[j]) {
			j++
		}
		if err := s.apply(ctx, l, items[:j]); err != nil {
			return err
		}
		items = items[j:]
	}
	return nil
}

// apply hands good items to the handler; a permanent failure is isolated
// by bisection.
func (s *session) apply(ctx context.Context, l Lease, items []item) error {
	ds := make([]*eventbus.Delivery, len(items))
	for i, it := range items {
		ds[i] = it.d
	}
	err := s.h(ctx, Batch{Lease: l, Deliveries: ds})
	switch {
	case err == nil:
		s.pos[l.Partition] = max(s.pos[l.Partition], items[len(items)-1].seq)
		return nil
	case !IsPermanent(err):
		return err
	case len(items) == 1:
		return s.reject(ctx, l, items[0], err)
	}
	mid := len(items) / 2
	if err := s.run(ctx, l, items[:mid]); err != nil {
		return err
	}
	return s.run(ctx, l, items[mid:])
}

// reject dead-letters one event with its reason and commits the position
// past it; a failed event (cause != nil) of a known conversation holds the
// conversation, an event of a held conversation is dead-lettered as held.
func (s *session) reject(ctx context.Context, l Lease, it item, cause error) error {
	k, known := it.conversation()
	s.mu.Lock()
	h, held := s.held[k]
	s.mu.Unlock()
	switch {
	case known && held:
		cause = fmt.Errorf("held: conversation held behind dead-lettered stream sequence %d (%s)", h.BlockedSeq, h.Reason)
	case known:
		h = Hold{Conversation: k, Partition: l.Partition, BlockedSeq: it.seq, Reason: truncate(cause.Error(), 512)}
	}
	if err := s.c.cfg.Bus.DeadLetter(ctx, l.Consumer, s.c.cfg.Stream, it.msg, cause); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.c.cfg.Pool, func(tx pgx.Tx) error {
		if known && !held {
			if err := hold(ctx, tx, l.Consumer, h); err != nil {
				return err
			}
		}
		return Commit(ctx, tx, l, it.seq)
	})
	if err != nil {
		return err
	}
	if known {
		s.mu.Lock()
		s.held[k] = h
		s.mu.Unlock()
	}
	s.pos[l.Partition] = max(s.pos[l.Partition], it.seq)
	return nil
}

// replays runs the replays requested (RequestReplay) of held
// conversations of owned partitions.
func (s *session) replays(ctx context.Context) error {
	var todo []Hold
	s.mu.Lock()
	for _, h := range s.held {
		if _, owned := s.leases[h.Partition]; owned && h.Replay {
			todo = append(todo, h)
		}
	}
	s.mu.Unlock()
	for _, h := range todo {
		if err := s.replay(ctx, h); err != nil {
			return err
		}
	}
	return nil
}

// replay re-applies a held conversation's events from its blocked sequence
// up to its partition's position (later ones are read live, after it) and
// then removes the hold, or records the new one when an event fails again.
// Interrupted, it runs again: its events are applied at least once.
func (s *session) replay(ctx context.Context, h Hold) error {
	l, to := s.leases[h.Partition], s.pos[h.Partition]
	var items []item
	if h.BlockedSeq <= to {
		r, err := s.c.cfg.Bus.Read(ctx, eventbus.ReadOptions{Stream: s.c.cfg.Stream, From: h.BlockedSeq,
			Filter: []string{eventbus.ConvSubject(h.TenantID, h.ConversationID, "*")}})
		if err != nil {
			return err
		}
		for done := false; !done; {
			n, err := r.Fetch(s.c.cfg.BatchSize, s.c.cfg.MaxWait, func(m eventbus.LogMsg) error {
				if m.Seq > to {
					done = true
					return nil
				}
				it := item{msg: m, seq: m.Seq}
				it.d, it.bad = s.c.cfg.Bus.Decode(m)
				items = append(items, it)
				done = m.Seq == to || m.Pending == 0
				return nil
			})
			if err != nil {
				return err
			}
			if n == 0 {
				pending, err := r.Pending(ctx)
				if err != nil {
					return err
				}
				done = pending == 0
			}
		}
	}
	s.mu.Lock()
	delete(s.held, h.Conversation)
	s.mu.Unlock()
	if err := s.run(ctx, l, items); err != nil {
		return err
	}
	s.mu.Lock()
	again, reheld := s.held[h.Conversation]
	s.mu.Unlock()
	err := pgx.BeginFunc(ctx, s.c.cfg.Pool, func(tx pgx.Tx) error {
		var err error
		if reheld {
			_, err = tx.Exec(ctx, `UPDATE partition_held SET blocked_seq = $4, reason = $5, replay = false, held_at = now()
				WHERE consumer = $1 AND tenant_id = $2 AND conversation_id = $3`, l.Consumer, h.TenantID, h.ConversationID, int64(again.BlockedSeq), again.Reason)
		} else {
			_, err = tx.Exec(ctx, `DELETE FROM partition_held WHERE consumer = $1 AND tenant_id = $2 AND conversation_id = $3`, l.Consumer, h.TenantID, h.ConversationID)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("partition: replay: %w", err)
	}
	s.c.cfg.Log.InfoContext(ctx, "held conversation replayed", "consumer", l.Consumer, "tenant_id", h.TenantID,
		"conversation_id", h.ConversationID, "events", len(items), "held_again", reheld)
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

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
