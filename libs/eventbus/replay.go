package eventbus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LastSequence is the sequence of the newest event in PARLEY_CONV (0 when
// empty).
func (b *Bus) LastSequence(ctx context.Context) (uint64, error) {
	s, err := b.js.Stream(ctx, ConvStream)
	if err != nil {
		return 0, fmt.Errorf("eventbus: stream: %w", classify(err))
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("eventbus: stream info: %w", classify(err))
	}
	return info.State.LastSeq, nil
}

// Replay hands the events of PARLEY_CONV with sequences from..to (inclusive)
// to h in batches of at most batch, in stream order, and returns the last
// sequence handed over. It reads with an ordered consumer: nothing is
// acknowledged and nothing is recorded on the server, so replays (projection
// rebuilds, backfills) never disturb the durable consumers. subjects
// optionally filter, e.g. one tenant's "parley.conv.v1.acme.>". h's error
// stops the replay. Events whose envelope does not match their subject
// (CheckSubject) are skipped, as the durable consumers dead-letter them.
func (b *Bus) Replay(ctx context.Context, from, to uint64, batch int, subjects []string, h Handler) (uint64, error) {
	if from == 0 {
		from = 1
	}
	if batch <= 0 {
		batch = 1000
	}
	if to < from {
		return 0, nil
	}
	cons, err := b.js.OrderedConsumer(ctx, ConvStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: subjects,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return 0, fmt.Errorf("eventbus: replay consumer: %w", classify(err))
	}
	var last uint64
	for last < to {
		if err := ctx.Err(); err != nil {
			return last, err
		}
		msgs, err := cons.Fetch(batch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return last, fmt.Errorf("eventbus: replay fetch: %w", classify(err))
		}
		var ds []*Delivery
		for m := range msgs.Messages() {
			d, err := b.decode(m)
			if err != nil {
				return last, fmt.Errorf("eventbus: replay: sequence after %d: %w", last, err)
			}
			if d.StreamSeq > to {
				break
			}
			if err := CheckSubject(d.Envelope, d.Subject); err != nil {
				// The durable consumers dead-letter it; a replay skips it.
				b.opts.Logger.WarnContext(ctx, "replay: skipping an event", "stream_seq", d.StreamSeq, "err", err)
				last = d.StreamSeq
				continue
			}
			ds = append(ds, d)
		}
		if err := msgs.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return last, fmt.Errorf("eventbus: replay fetch: %w", classify(err))
		}
		if len(ds) == 0 {
			// An empty fetch can also mean a slow read: stop only when the
			// consumer has nothing pending (a filtered replay may end
			// before to) or the stream ends before to.
			if info, err := cons.Info(ctx); err == nil && info.NumPending == 0 {
				return last, nil
			}
			if now, err := b.LastSequence(ctx); err == nil && now <= last {
				return last, nil
			}
			continue
		}
		if err := h(ctx, ds); err != nil {
			return last, err
		}
		last = max(last, ds[len(ds)-1].StreamSeq)
	}
	return last, nil
}
