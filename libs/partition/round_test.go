package partition_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// roundFixture is a bus with events of many conversations over 4
// partitions, and a table recording what was applied.
type roundFixture struct {
	pool *pgxpool.Pool
	bus  *eventbus.Bus
	// seqs are the stream sequences of each partition's events.
	seqs map[int][]uint64
	last uint64
}

const roundParts = 4

func newRoundFixture(t *testing.T, events func(publish func(conv, id string))) *roundFixture {
	ctx := context.Background()
	f := &roundFixture{pool: pool(t), seqs: map[int][]uint64{}}
	srv := testenv.NATS(t)
	bus, err := eventbus.Connect(ctx, srv.URL, "test", eventbus.Options{Producer: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	f.bus = bus
	if _, err := f.pool.Exec(ctx, `CREATE TABLE applied (seq bigint PRIMARY KEY, conv text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	events(func(conv, id string) { f.publish(t, conv, id) })
	return f
}

// publish appends one event of conv and returns its stream sequence.
func (f *roundFixture) publish(t *testing.T, conv, id string) uint64 {
	env := &eventv1.Envelope{EventId: id, TenantId: "acme", ConversationId: conv,
		Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Text: id}}}
	ack, err := f.bus.Publish(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	p := partition.Of("acme", conv, roundParts)
	f.seqs[p] = append(f.seqs[p], ack.Sequence)
	f.last = ack.Sequence
	return ack.Sequence
}

// apply inserts the deliveries of bs and commits their positions in one
// transaction; the event "poison" is refused permanently.
func (f *roundFixture) apply(ctx context.Context, bs []partition.Batch, before func(pgx.Tx) error) error {
	for _, b := range bs {
		for _, d := range b.Deliveries {
			if d.Envelope.GetEventId() == "poison" {
				return eventbus.Permanent(errors.New("test: refused"))
			}
		}
	}
	return pgx.BeginFunc(ctx, f.pool, func(tx pgx.Tx) error {
		for _, b := range bs {
			for _, d := range b.Deliveries {
				if _, err := tx.Exec(ctx, `INSERT INTO applied VALUES ($1, $2)`, int64(d.StreamSeq), d.Envelope.GetConversationId()); err != nil {
					return err
				}
			}
		}
		if before != nil {
			if err := before(tx); err != nil {
				return err
			}
		}
		return partition.CommitRound(ctx, tx, bs)
	})
}

// run consumes with round and per-partition handlers until the positions
// of the partitions in want reach want's values.
func (f *roundFixture) run(t *testing.T, round partition.RoundHandler, h partition.Handler, want map[int]uint64) {
	ctx := context.Background()
	c := partition.NewConsumer(partition.Config{Bus: f.bus, Pool: f.pool, BatchSize: 500, Round: round, Retry: 50 * time.Millisecond,
		Coordinator: partition.NewCoordinator(f.pool, "test", "m1", roundParts, time.Second)})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(cctx, h) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		pos, err := partition.Positions(ctx, f.pool, "test", roundParts)
		reached := err == nil
		for p, w := range want {
			reached = reached && pos[p] >= w
		}
		if reached {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("positions %v, want %v", pos, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *roundFixture) applied(t *testing.T) map[uint64]int {
	rows, err := f.pool.Query(context.Background(), `SELECT seq FROM applied`)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]int{}
	for _, s := range seqs {
		out[uint64(s)]++
	}
	return out
}

// A permanent failure inside a round of several partitions: the round is
// applied partition by partition instead, the poison is dead-lettered and
// holds its conversation only, and every other event of every partition is
// applied exactly once.
func TestRoundPermanentFailureFallsBackPerPartition(t *testing.T) {
	ctx := context.Background()
	var poisonSeq, afterSeq uint64
	f := newRoundFixture(t, func(publish func(conv, id string)) {
		for i := range 32 {
			publish(fmt.Sprintf("c%02d", i), fmt.Sprintf("first-%02d", i))
		}
	})
	// The poison and the event behind it, then more of other conversations.
	poisonSeq = f.publish(t, "c20", "poison")
	afterSeq = f.publish(t, "c20", "after-poison")
	for i := range 32 {
		f.publish(t, fmt.Sprintf("c%02d", i+100), fmt.Sprintf("second-%02d", i))
	}

	var mu sync.Mutex
	rounds, widest := 0, 0
	round := func(ctx context.Context, bs []partition.Batch) error {
		mu.Lock()
		rounds++
		widest = max(widest, len(bs))
		mu.Unlock()
		return f.apply(ctx, bs, nil)
	}
	h := func(ctx context.Context, b partition.Batch) error { return f.apply(ctx, []partition.Batch{b}, nil) }
	want := map[int]uint64{}
	for p := range roundParts {
		want[p] = f.last
	}
	f.run(t, round, h, want)

	got := f.applied(t)
	for p, seqs := range f.seqs {
		for _, s := range seqs {
			n := got[s]
			if s == poisonSeq || s == afterSeq {
				if n != 0 {
					t.Errorf("seq %d (held conversation) applied %d times", s, n)
				}
				continue
			}
			if n != 1 {
				t.Errorf("seq %d of partition %d applied %d times, want once", s, p, n)
			}
		}
	}
	mu.Lock()
	if rounds == 0 || widest < 2 {
		t.Errorf("%d rounds, widest %d partitions: events were not handled in multi-partition rounds", rounds, widest)
	}
	mu.Unlock()
	held, err := partition.Held(ctx, f.pool, "test")
	if err != nil {
		t.Fatal(err)
	}
	if h, ok := held[partition.Conversation{TenantID: "acme", ConversationID: "c20"}]; !ok || h.BlockedSeq != poisonSeq || len(held) != 1 {
		t.Fatalf("held %v", held)
	}
	st, err := f.bus.JetStream().Stream(ctx, eventbus.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("%d dead letters, want the poison and the event held behind it", n)
	}
}

// A partition lost mid-round (another member took its lease before the
// round committed): the round commits nothing, neither that partition's
// position nor any effect; the consumer goes on with the partitions it
// still owns and applies their events exactly once.
func TestRoundLostPartitionCommitsNothing(t *testing.T) {
	ctx := context.Background()
	f := newRoundFixture(t, func(publish func(conv, id string)) {
		for i := range 40 {
			publish(fmt.Sprintf("c%02d", i), fmt.Sprintf("e-%02d", i))
		}
	})
	const lost = 1
	if len(f.seqs[lost]) == 0 || len(f.seqs) != roundParts {
		t.Fatalf("events per partition %v: the test needs every partition", f.seqs)
	}
	var once sync.Once
	var fenced sync.WaitGroup
	fenced.Add(1)
	round := func(ctx context.Context, bs []partition.Batch) error {
		var steal func(pgx.Tx) error
		once.Do(func() {
			if len(bs) < 2 {
				t.Errorf("first round of %d partitions, want all of them", len(bs))
			}
			steal = func(pgx.Tx) error {
				// Another member takes the partition while the round runs.
				_, err := f.pool.Exec(ctx, `UPDATE partition_leases SET owner = 'm2', epoch = epoch + 1,
					expires_at = clock_timestamp() + interval '1 hour' WHERE consumer = 'test' AND partition = $1`, lost)
				return err
			}
		})
		err := f.apply(ctx, bs, steal)
		if steal != nil {
			if !errors.Is(err, partition.ErrFenced) {
				t.Errorf("round with a lost partition: %v, want ErrFenced", err)
			}
			fenced.Done()
		}
		return err
	}
	h := func(ctx context.Context, b partition.Batch) error {
		if b.Lease.Partition == lost {
			t.Errorf("partition %d handled after it was lost", lost)
		}
		return f.apply(ctx, []partition.Batch{b}, nil)
	}
	want := map[int]uint64{}
	for p := range roundParts {
		if p != lost {
			want[p] = f.last
		}
	}
	f.run(t, round, h, want)
	fenced.Wait()

	pos, err := partition.Positions(ctx, f.pool, "test", roundParts)
	if err != nil {
		t.Fatal(err)
	}
	if pos[lost] != 0 {
		t.Errorf("position of the lost partition %d, want 0 (nothing committed)", pos[lost])
	}
	got := f.applied(t)
	for p, seqs := range f.seqs {
		for _, s := range seqs {
			want := 1
			if p == lost {
				want = 0
			}
			if got[s] != want {
				t.Errorf("seq %d of partition %d applied %d times, want %d", s, p, got[s], want)
			}
		}
	}
}

// Handlers: a per-partition consumer gets no round handler; a wrapper's
// failure for any batch of a round fails the round before it is handled.
func TestHandlers(t *testing.T) {
	ctx := context.Background()
	handled := 0
	h := func(context.Context, partition.Batch) error { handled++; return nil }
	round := func(context.Context, []partition.Batch) error { handled += 10; return nil }
	if _, r := partition.Handlers(h, round, true, nil); r != nil {
		t.Fatal("per partition: a round handler")
	}
	refused := eventbus.Permanent(errors.New("test: refused"))
	wrap := func(next partition.Handler) partition.Handler {
		return func(ctx context.Context, b partition.Batch) error {
			if b.Lease.Partition == 2 {
				return refused
			}
			return next(ctx, b)
		}
	}
	wh, wr := partition.Handlers(h, round, false, wrap)
	d := []*eventbus.Delivery{{StreamSeq: 1}}
	if err := wr(ctx, []partition.Batch{{Lease: partition.Lease{Partition: 1}, Deliveries: d}, {Lease: partition.Lease{Partition: 2}, Deliveries: d}}); !errors.Is(err, refused) || handled != 0 {
		t.Fatalf("round with a refused batch: %v, handled %d", err, handled)
	}
	if err := wr(ctx, []partition.Batch{{Lease: partition.Lease{Partition: 1}, Deliveries: d}}); err != nil || handled != 10 {
		t.Fatalf("round: %v, handled %d", err, handled)
	}
	if err := wh(ctx, partition.Batch{Lease: partition.Lease{Partition: 2}, Deliveries: d}); !errors.Is(err, refused) || handled != 10 {
		t.Fatalf("wrapped handler: %v, handled %d", err, handled)
	}
}
