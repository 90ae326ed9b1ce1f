package eventbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ReadOptions say what a Reader reads.
type ReadOptions struct {
	// Stream defaults to PARLEY_CONV.
	Stream string
	// From is the first sequence read (default 1).
	From uint64
	// Filter optionally restricts the subjects read, e.g. one tenant's
	// "parley.conv.v1.acme.>".
	Filter []string
	// HeadersOnly reads subjects and headers without the payloads.
	HeadersOnly bool
}

// Reader reads a stream in order from a sequence. It is an ordered
// consumer: nothing is acknowledged or recorded on the server, so readers
// (partition consumers, replays, verification) never disturb one another.
type Reader struct {
	b      *Bus
	stream string
	oc     jetstream.Consumer
}

// LogMsg is one message a Reader read.
type LogMsg struct {
	// Seq is the message's stream sequence.
	Seq uint64
	// Pending is how many messages matching the reader's filter follow it.
	Pending uint64
	Subject string
	msg     jetstream.Msg
}

// Data is the message's payload (nil for a headers-only reader).
func (m LogMsg) Data() []byte { return m.msg.Data() }

// Header is the message's headers.
func (m LogMsg) Header() nats.Header { return m.msg.Headers() }

// Read opens a Reader.
func (b *Bus) Read(ctx context.Context, o ReadOptions) (*Reader, error) {
	if o.Stream == "" {
		o.Stream = ConvStream
	}
	if o.From == 0 {
		o.From = 1
	}
	oc, err := b.js.OrderedConsumer(ctx, o.Stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: o.Filter,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    o.From,
		HeadersOnly:    o.HeadersOnly,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %v", ErrUnavailable, o.Stream, err)
	}
	return &Reader{b: b, stream: o.Stream, oc: oc}, nil
}

// Fetch waits up to maxWait for up to n messages and hands each to fn in
// stream order; it returns how many it read. Reading nothing is not an
// error. fn's error stops the fetch and is returned; read failures (of a
// fetch that read nothing) are ErrUnavailable.
func (r *Reader) Fetch(n int, maxWait time.Duration, fn func(LogMsg) error) (int, error) {
	batch, err := r.oc.Fetch(n, jetstream.FetchMaxWait(maxWait))
	if err != nil {
		return 0, fmt.Errorf("%w: reading %s: %v", ErrUnavailable, r.stream, err)
	}
	got := 0
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil {
			continue
		}
		got++
		if err := fn(LogMsg{Seq: meta.Sequence.Stream, Pending: meta.NumPending, Subject: m.Subject(), msg: m}); err != nil {
			// Drain the rest of the fetch so the consumer stays usable.
			for range batch.Messages() {
			}
			return got, err
		}
	}
	// A fetch that delivered messages ended well enough: a lasting failure
	// shows on the next one.
	if err := batch.Error(); got == 0 && err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		return got, fmt.Errorf("%w: reading %s: %v", ErrUnavailable, r.stream, err)
	}
	return got, nil
}

// Pending is how many messages matching the filter the reader has not read
// yet.
func (r *Reader) Pending(ctx context.Context) (uint64, error) {
	info, err := r.oc.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("eventbus: reading %s: %w", r.stream, classify(err))
	}
	return info.NumPending, nil
}

// StreamState is the extent of a stream.
type StreamState struct {
	FirstSeq, LastSeq, Msgs uint64
}

// StreamState returns the extent of stream; found is false when it does
// not exist.
func (b *Bus) StreamState(ctx context.Context, stream string) (st StreamState, found bool, err error) {
	s, err := b.js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return StreamState{}, false, nil
	}
	if err != nil {
		return StreamState{}, false, fmt.Errorf("eventbus: stream %s: %w", stream, classify(err))
	}
	info, err := s.Info(ctx)
	if err != nil {
		return StreamState{}, false, fmt.Errorf("eventbus: stream %s: %w", stream, classify(err))
	}
	return StreamState{FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Msgs: info.State.Msgs}, true, nil
}

// ConsumerLag returns how many messages of stream the durable consumer
// has not yet had delivered or not yet acknowledged; found is false when
// it does not exist.
func (b *Bus) ConsumerLag(ctx context.Context, stream, durable string) (lag uint64, found bool, err error) {
	c, err := b.js.Consumer(ctx, stream, durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("eventbus: consumer %s: %w", durable, classify(err))
	}
	info, err := c.Info(ctx)
	if err != nil {
		return 0, false, fmt.Errorf("eventbus: consumer %s: %w", durable, classify(err))
	}
	return info.NumPending + uint64(info.NumAckPending), true, nil
}

// DurableLags returns ConsumerLag of every durable consumer of stream
// (ordered consumers, which come and go, are left out).
func (b *Bus) DurableLags(ctx context.Context, stream string) (map[string]uint64, error) {
	s, err := b.js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("eventbus: stream %s: %w", stream, classify(err))
	}
	out := map[string]uint64{}
	lister := s.ListConsumers(ctx)
	for ci := range lister.Info() {
		if ci.Config.Durable != "" {
			out[ci.Name] = ci.NumPending + uint64(ci.NumAckPending)
		}
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("eventbus: consumers of %s: %w", stream, classify(err))
	}
	return out, nil
}
