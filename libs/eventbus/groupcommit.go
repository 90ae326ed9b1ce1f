package eventbus

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// CommitMode selects how a GroupCommitter stores events.
type CommitMode string

const (
	// CommitAtomic groups concurrent requests into JetStream atomic batches:
	// one stream write, and one fsync when the server syncs before
	// acknowledging. The right choice for sync_interval: always.
	CommitAtomic CommitMode = "atomic"
	// CommitPipelined publishes every event on its own, pipelined
	// (asynchronous publish, then wait for all acks). Fastest when the
	// server acknowledges before syncing (JetStream's default), where an
	// atomic batch's fixed cost outweighs what it saves. A request's events
	// are then not stored atomically.
	CommitPipelined CommitMode = "pipelined"
)

// ParseCommitMode reads a CommitMode from configuration.
func ParseCommitMode(s string) (CommitMode, error) {
	switch CommitMode(s) {
	case CommitAtomic, CommitPipelined:
		return CommitMode(s), nil
	case "":
		return CommitAtomic, nil
	}
	return "", fmt.Errorf("eventbus: commit mode %q: want %q or %q", s, CommitAtomic, CommitPipelined)
}

// GroupCommitOptions configure a GroupCommitter.
type GroupCommitOptions struct {
	// Mode is CommitAtomic (default) or CommitPipelined.
	Mode CommitMode
	// MaxEvents is the most events in one atomic batch (default and maximum
	// MaxAtomicBatch).
	MaxEvents int
	// MaxInFlight is how many batches may await their commit at once
	// (default 2; JetStream allows 50 per stream).
	MaxInFlight int
	// Linger is how long a batch waits for more events after its first one
	// while another batch is already in flight (default 1ms; negative: never
	// wait). Every atomic batch has a fixed cost (on a single-replica file
	// stream, a staging store per batch: about 2.5 ms on a 2-core machine),
	// so under load waiting a little for company pays off; with nothing in
	// flight a batch goes out as soon as the queue is empty.
	Linger time.Duration
}

// GroupCommitter appends the events of concurrent callers to PARLEY_CONV in
// JetStream atomic batches: whatever requests are waiting when a commit slot
// frees up are sent together, so one stream write (and, with
// sync_interval: always, one fsync) covers many requests. At low load a
// request is committed on its own at once; under load batches grow up to
// MaxEvents. Append returns only after the batch holding the caller's events
// is committed, so a success always means stored.
//
// One caller's events never straddle two batches unless they exceed
// MaxEvents, so a request of up to MaxEvents events is stored all or nothing.
// JetStream rejects an atomic batch that holds an already-stored message id;
// the committer then appends that batch's events one by one, which reports
// the retried events as duplicates and stores the rest. When the server
// refuses a batch of several requests for another reason (one request's
// event breaks a stream limit, say), each request is committed again on its
// own, so the refusal fails only the request that caused it. An event whose
// encoded message exceeds the server's max_payload is refused before
// batching, with a *TooLargeError.
type GroupCommitter struct {
	bus    *Bus
	opts   GroupCommitOptions
	queue  chan *pendingAppend
	slots  chan struct{}
	stop   chan struct{}
	done   chan struct{}
	closed sync.Once
}

type pendingAppend struct {
	ctx  context.Context
	envs []*eventv1.Envelope
	msgs []*nats.Msg
	acks []PubAck
	err  error
	done chan struct{}
}

// NewGroupCommitter starts a committer on b. Close stops it.
func NewGroupCommitter(b *Bus, opts GroupCommitOptions) *GroupCommitter {
	if opts.Mode == "" {
		opts.Mode = CommitAtomic
	}
	if opts.MaxEvents <= 0 || opts.MaxEvents > MaxAtomicBatch {
		opts.MaxEvents = MaxAtomicBatch
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 2
	}
	if opts.Linger < 0 {
		opts.Linger = 0
	} else if opts.Linger == 0 {
		opts.Linger = time.Millisecond
	}
	g := &GroupCommitter{
		bus:   b,
		opts:  opts,
		queue: make(chan *pendingAppend, 4096),
		slots: make(chan struct{}, opts.MaxInFlight),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if opts.Mode == CommitAtomic {
		go g.loop()
	} else {
		close(g.done)
	}
	return g
}

// Close stops accepting appends, waits for batches in flight and fails the
// ones still queued with ErrUnavailable.
func (g *GroupCommitter) Close() {
	g.closed.Do(func() {
		close(g.stop)
		<-g.done
	})
}

// Append stores envs and returns one PubAck per envelope, in order. Envelopes
// must carry event_id, tenant_id and conversation_id; Append completes kind,
// recorded_at and producer. On error nothing can be assumed stored except
// what a retry reports as duplicate.
func (g *GroupCommitter) Append(ctx context.Context, envs []*eventv1.Envelope) ([]PubAck, error) {
	if len(envs) == 0 {
		return nil, nil
	}
	ctx, span := g.bus.tracer.Start(ctx, "append events",
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", ConvStream),
			attribute.Int("messaging.batch.message_count", len(envs)),
		))
	defer span.End()
	p := &pendingAppend{ctx: ctx, envs: envs, msgs: make([]*nats.Msg, len(envs)), done: make(chan struct{})}
	now := time.Now()
	limit := g.bus.MaxPayload()
	for i, env := range envs {
		m, err := g.bus.message(ctx, env, now)
		if err != nil {
			return nil, err
		}
		if size := batchedSize(m); limit > 0 && int64(size) > limit {
			return nil, &TooLargeError{Index: i, Size: size, Max: limit}
		}
		p.msgs[i] = m
	}
	if g.opts.Mode == CommitPipelined {
		acks, err := g.bus.publishPipelined(ctx, p.msgs)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
			return nil, err
		}
		return acks, nil
	}
	select {
	case g.queue <- p:
	case <-g.stop:
		return nil, fmt.Errorf("%w: committer closed", ErrUnavailable)
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		// The batch may still commit; the caller retries with the same ids.
		return nil, fmt.Errorf("%w: outcome unknown: %v", ErrUnavailable, ctx.Err())
	}
	if p.err != nil {
		span.RecordError(p.err)
		span.SetStatus(codes.Error, p.err.Error())
		return nil, p.err
	}
	if len(p.acks) > 0 {
		span.SetAttributes(attribute.Int64("messaging.nats.stream_sequence", int64(p.acks[len(p.acks)-1].Sequence)))
	}
	return p.acks, nil
}

func (g *GroupCommitter) loop() {
	defer close(g.done)
	var wg sync.WaitGroup
	defer wg.Wait()
	var carry *pendingAppend
	timer := newLingerTimer()
	defer timer.stop()
	for {
		// Take a slot first: while every slot is busy, requests pile up in
		// the queue and form the next, larger batch.
		select {
		case g.slots <- struct{}{}:
		case <-g.stop:
			g.failQueued(carry)
			return
		}
		batch, n := []*pendingAppend(nil), 0
		if carry != nil {
			batch, n, carry = append(batch, carry), len(carry.msgs), nil
		} else {
			select {
			case p := <-g.queue:
				batch, n = append(batch, p), len(p.msgs)
			case <-g.stop:
				<-g.slots
				g.failQueued(nil)
				return
			}
		}
		wait := time.Duration(0)
		if len(g.slots) > 1 { // another batch is in flight
			wait = g.opts.Linger
		}
		linger := timer.reset(wait)
	fill:
		for n < g.opts.MaxEvents {
			select {
			case p := <-g.queue:
				if n+len(p.msgs) > g.opts.MaxEvents {
					carry = p
					break fill
				}
				batch, n = append(batch, p), n+len(p.msgs)
			default:
				select {
				case p := <-g.queue:
					if n+len(p.msgs) > g.opts.MaxEvents {
						carry = p
						break fill
					}
					batch, n = append(batch, p), n+len(p.msgs)
				case <-linger:
					break fill
				case <-g.stop:
					break fill
				}
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-g.slots }()
			g.commit(batch)
		}()
	}
}

func (g *GroupCommitter) failQueued(carry *pendingAppend) {
	fail := func(p *pendingAppend) {
		p.err = fmt.Errorf("%w: committer closed", ErrUnavailable)
		close(p.done)
	}
	if carry != nil {
		fail(carry)
	}
	for {
		select {
		case p := <-g.queue:
			fail(p)
		default:
			return
		}
	}
}

// commit stores the batch's requests and completes them.
func (g *GroupCommitter) commit(batch []*pendingAppend) {
	defer func() {
		for _, p := range batch {
			close(p.done)
		}
	}()
	var msgs []*nats.Msg
	links := make([]trace.Link, 0, len(batch))
	for _, p := range batch {
		msgs = append(msgs, p.msgs...)
		links = append(links, trace.LinkFromContext(p.ctx))
	}
	ctx, span := g.bus.tracer.Start(context.Background(), "commit batch",
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.Int("messaging.batch.message_count", len(msgs)),
			attribute.Int("parley.requests", len(batch)),
		))
	defer span.End()

	acks, err := g.store(ctx, msgs)
	if err != nil && len(batch) > 1 && !errors.Is(err, ErrUnavailable) {
		// The server refused the batch, not the connection: commit each
		// request on its own so that only the refused one fails. Nothing
		// of the batch was stored (an atomic batch is all or nothing),
		// except by the one-by-one fallback after a duplicate id, whose
		// stored events now come back as duplicates.
		span.AddEvent("batch refused; committing its requests one by one", trace.WithAttributes(attribute.String("error", err.Error())))
		for _, p := range batch {
			p.acks, p.err = g.store(ctx, p.msgs)
		}
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		for _, p := range batch {
			p.err = err
		}
		return
	}
	off := 0
	for _, p := range batch {
		p.acks = acks[off : off+len(p.msgs)]
		off += len(p.msgs)
	}
}

// store appends msgs in atomic batches of at most MaxEvents (a request
// larger than MaxEvents is stored in consecutive batches).
func (g *GroupCommitter) store(ctx context.Context, msgs []*nats.Msg) ([]PubAck, error) {
	acks := make([]PubAck, 0, len(msgs))
	for start := 0; start < len(msgs); start += g.opts.MaxEvents {
		end := min(start+g.opts.MaxEvents, len(msgs))
		part, err := g.publishAtomic(ctx, msgs[start:end])
		if err != nil {
			return nil, err
		}
		acks = append(acks, part...)
	}
	return acks, nil
}

// TooLargeError refuses the event at Index of an Append: its encoded message
// (envelope, headers and atomic-batch headers) is Size bytes, more than the
// server's max_payload (Max). Nothing of the request was stored.
type TooLargeError struct {
	Index int
	Size  int
	Max   int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("eventbus: event %d is %d bytes encoded; the event log accepts at most %d", e.Index, e.Size, e.Max)
}

// batchHeadersSize is the most PublishAtomic adds to a message's headers:
// the batch id (a UUID), a sequence of up to MaxAtomicBatch and the commit
// flag, each as "Name: value\r\n".
const batchHeadersSize = len(headerBatchID) + len(": \r\n") + len("00000000-0000-0000-0000-000000000000") +
	len(headerBatchSeq) + len(": \r\n") + len("1000") +
	len(headerBatchCommit) + len(": 1\r\n")

// publishAtomic stores msgs as one atomic batch, or one by one when the batch
// holds a message id JetStream has already stored.
func (g *GroupCommitter) publishAtomic(ctx context.Context, msgs []*nats.Msg) ([]PubAck, error) {
	if len(msgs) == 1 {
		a, err := g.bus.publishMsg(ctx, msgs[0])
		if err != nil {
			return nil, err
		}
		return []PubAck{a}, nil
	}
	first, err := g.bus.PublishAtomic(ctx, msgs)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeBatchDuplicate || apiErr.ErrorCode == errCodeDuplicateProcess) {
		return g.publishEach(ctx, msgs)
	}
	if err != nil {
		return nil, err
	}
	out := make([]PubAck, len(msgs))
	for j := range out {
		out[j] = PubAck{Sequence: first + uint64(j)}
	}
	return out, nil
}

func (g *GroupCommitter) publishEach(ctx context.Context, msgs []*nats.Msg) ([]PubAck, error) {
	out := make([]PubAck, 0, len(msgs))
	for _, m := range msgs {
		a, err := g.bus.publishMsg(ctx, m)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// lingerTimer is a reusable one-shot timer.
type lingerTimer struct{ t *time.Timer }

func newLingerTimer() *lingerTimer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &lingerTimer{t: t}
}

// reset arms the timer for d and returns its channel (already closed when d is
// 0, so the batch goes out as soon as the queue is empty).
func (l *lingerTimer) reset(d time.Duration) <-chan time.Time {
	if d <= 0 {
		c := make(chan time.Time)
		close(c)
		return c
	}
	l.t.Reset(d)
	return l.t.C
}

func (l *lingerTimer) stop() { l.t.Stop() }
