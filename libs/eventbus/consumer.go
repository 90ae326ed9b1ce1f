package eventbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
)

// Delivery is one event handed to a consumer.
type Delivery struct {
	Envelope *eventv1.Envelope
	Subject  string
	// StreamSeq is the event's sequence in the stream; consumers record the
	// highest sequence they applied.
	StreamSeq uint64
	// NumDelivered counts deliveries of this message, starting at 1.
	NumDelivered uint64
	// SpanContext is the producer's span, from the traceparent header.
	SpanContext trace.SpanContext
	msg         jetstream.Msg
}

// Message is the JetStream message the delivery was decoded from.
func (d *Delivery) Message() jetstream.Msg { return d.msg }

// Context returns ctx carrying the producer's trace context and the event's
// tenant and conversation, for logging and child spans.
func (d *Delivery) Context(ctx context.Context) context.Context {
	if d.SpanContext.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, d.SpanContext)
	}
	return ctx
}

// Handler applies a batch of events. It returns nil only once the effect of
// every event is durable; the batch is then acknowledged. On error the
// consumer isolates the failure by bisection: it retries each half of the
// batch, and halves of a failing half, so that a single bad event cannot hold
// back the others and costs O(log n) handler calls, the good events still
// being handled in batches. A handler must therefore accept any subsequence
// of a batch (in stream order).
type Handler func(ctx context.Context, batch []*Delivery) error

// permanentError marks a failure that retrying cannot fix.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

// Permanent wraps err so that the consumer dead-letters the event at once
// instead of retrying it.
func Permanent(err error) error { return permanentError{err} }

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var perm permanentError
	return errors.As(err, &perm)
}

// ConsumerConfig describes a durable pull consumer.
type ConsumerConfig struct {
	// Durable is the consumer's name; it also names its dead letters.
	Durable string
	// Stream defaults to PARLEY_CONV.
	Stream string
	// FilterSubjects restricts the subjects delivered (all when empty).
	FilterSubjects []string
	// BatchSize is the most events handed to the handler at once (default 500).
	BatchSize int
	// MaxWait is how long a fetch waits to fill a batch (default 250ms).
	MaxWait time.Duration
	// MaxDeliver bounds deliveries of one event before it is dead-lettered
	// (default 5).
	MaxDeliver int
	// Backoff between redeliveries, indexed by delivery count (last value
	// repeats). Default 1s, 5s, 15s, 30s.
	Backoff []time.Duration
	// AckWait is how long the server waits for an ack before redelivering
	// (default 60s); in-flight batches are kept alive while being handled.
	AckWait time.Duration
	// DeliverPolicy is where a new consumer starts (default all).
	DeliverPolicy jetstream.DeliverPolicy
}

func (c *ConsumerConfig) defaults() {
	if c.Stream == "" {
		c.Stream = ConvStream
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.MaxWait <= 0 {
		c.MaxWait = 250 * time.Millisecond
	}
	if c.MaxDeliver <= 0 {
		c.MaxDeliver = 5
	}
	if len(c.Backoff) == 0 {
		c.Backoff = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second}
	}
	if c.AckWait <= 0 {
		c.AckWait = 60 * time.Second
	}
}

// Consume runs a durable consumer until ctx is cancelled. The batch in
// progress when ctx is cancelled is finished and acknowledged before Consume
// returns (graceful drain).
func (b *Bus) Consume(ctx context.Context, cfg ConsumerConfig, h Handler) error {
	cfg.defaults()
	if cfg.Durable == "" {
		return errors.New("eventbus: consumer needs a durable name")
	}
	cons, err := b.js.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		FilterSubjects: cfg.FilterSubjects,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		// Redelivery is bounded by the client (see fail) so that the last
		// failure is dead-lettered rather than silently abandoned.
		MaxDeliver:    -1,
		MaxAckPending: cfg.BatchSize * 4,
		DeliverPolicy: cfg.DeliverPolicy,
	})
	if err != nil {
		return fmt.Errorf("eventbus: consumer %s: %w", cfg.Durable, classify(err))
	}
	log := b.opts.Logger.With("consumer", cfg.Durable)
	// The next batch is fetched while the current one is handled, so the
	// handler's I/O and the fetch round trip overlap. At most two batches
	// wait beside the one being handled (MaxAckPending allows four).
	batches := make(chan []jetstream.Msg, 1)
	go func() {
		defer close(batches)
		for ctx.Err() == nil {
			msgs := b.fetch(ctx, cons, cfg, log)
			if len(msgs) > 0 {
				// Delivered to us: always handed over, even once shutdown
				// begins, so it is handled and acknowledged below.
				batches <- msgs
			}
		}
	}()
	for msgs := range batches {
		// The batch was delivered to us: finish it even if shutdown begins.
		b.handleBatch(context.WithoutCancel(ctx), cfg, msgs, h)
	}
	return nil
}

// fetch waits up to cfg.MaxWait to fill a batch and returns what arrived.
func (b *Bus) fetch(ctx context.Context, cons jetstream.Consumer, cfg ConsumerConfig, log *slog.Logger) []jetstream.Msg {
	batch, err := cons.Fetch(cfg.BatchSize, jetstream.FetchMaxWait(cfg.MaxWait))
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("fetch failed; retrying", "err", err)
			sleep(ctx, time.Second)
		}
		return nil
	}
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && len(msgs) == 0 && ctx.Err() == nil {
		log.Debug("fetch ended", "err", err)
	}
	return msgs
}

func (b *Bus) handleBatch(ctx context.Context, cfg ConsumerConfig, msgs []jetstream.Msg, h Handler) {
	deliveries := make([]*Delivery, 0, len(msgs))
	links := make([]trace.Link, 0, len(msgs))
	for _, m := range msgs {
		d, err := b.decode(m)
		if err == nil && cfg.Stream == ConvStream {
			err = CheckSubject(d.Envelope, d.Subject)
		}
		if err != nil {
			b.deadLetter(ctx, cfg, m, Permanent(err))
			continue
		}
		deliveries = append(deliveries, d)
		if d.SpanContext.IsValid() && len(links) < 128 {
			links = append(links, trace.Link{SpanContext: d.SpanContext})
		}
	}
	if len(deliveries) == 0 {
		return
	}
	ctx, span := b.tracer.Start(ctx, "consume "+cfg.Durable,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithLinks(links...),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.consumer.group.name", cfg.Durable),
			attribute.Int("messaging.batch.message_count", len(deliveries)),
		))
	defer span.End()

	stop := keepAlive(ctx, deliveries, cfg.AckWait/3)
	err := h(ctx, deliveries)
	stop()
	if err == nil {
		for _, d := range deliveries {
			b.ack(ctx, d)
		}
		b.flush(ctx)
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	if len(deliveries) == 1 {
		b.fail(ctx, cfg, deliveries[0], err)
		return
	}
	// Isolate the failure by bisection, keeping the batch alive meanwhile.
	stop = keepAlive(ctx, deliveries, cfg.AckWait/3)
	defer stop()
	b.bisect(ctx, cfg, deliveries, h)
	b.flush(ctx)
}

// bisect handles each half of a failed batch ds (len >= 2) on its own, in
// stream order: a half that succeeds is acknowledged, a failing half of
// several events is bisected in turn, and a failing single event is failed
// (retried later or dead-lettered with its error).
func (b *Bus) bisect(ctx context.Context, cfg ConsumerConfig, ds []*Delivery, h Handler) {
	mid := len(ds) / 2
	for _, half := range [][]*Delivery{ds[:mid], ds[mid:]} {
		hctx := ctx
		if len(half) == 1 {
			hctx = half[0].Context(ctx)
		}
		err := h(hctx, half)
		switch {
		case err == nil:
			for _, d := range half {
				b.ack(ctx, d)
			}
		case len(half) == 1:
			b.fail(ctx, cfg, half[0], err)
		default:
			b.bisect(ctx, cfg, half, h)
		}
	}
}

// flush waits until the server has processed the acks sent so far (one
// round trip per batch rather than one per event).
func (b *Bus) flush(ctx context.Context) {
	if err := b.nc.FlushTimeout(b.opts.PublishTimeout); err != nil {
		b.opts.Logger.WarnContext(ctx, "flush after acks failed; unconfirmed events will be redelivered", "err", err)
	}
}

func (b *Bus) ack(ctx context.Context, d *Delivery) {
	if err := d.msg.Ack(); err != nil {
		// The effect is durable and idempotent; the event will be redelivered
		// and applied again without harm.
		b.opts.Logger.WarnContext(ctx, "ack failed", "subject", d.Subject, "stream_seq", d.StreamSeq, "err", err)
	}
}

func (b *Bus) fail(ctx context.Context, cfg ConsumerConfig, d *Delivery, err error) {
	var perm permanentError
	if errors.As(err, &perm) || d.NumDelivered >= uint64(cfg.MaxDeliver) {
		b.deadLetter(ctx, cfg, d.msg, err)
		return
	}
	i := int(d.NumDelivered) - 1
	if i >= len(cfg.Backoff) {
		i = len(cfg.Backoff) - 1
	}
	b.opts.Logger.WarnContext(d.Context(ctx), "event failed; will retry", "consumer", cfg.Durable, "subject", d.Subject,
		"stream_seq", d.StreamSeq, "delivery", d.NumDelivered, "err", err)
	if nerr := d.msg.NakWithDelay(cfg.Backoff[i]); nerr != nil {
		b.opts.Logger.WarnContext(ctx, "nak failed", "err", nerr)
	}
}

// deadLetter copies the message to PARLEY_DLQ and terminates it. If the copy
// cannot be stored, the message is left unacknowledged so that it is
// redelivered after AckWait: nothing is dropped silently.
func (b *Bus) deadLetter(ctx context.Context, cfg ConsumerConfig, m jetstream.Msg, cause error) {
	if err := b.deadLetterMsg(ctx, cfg.Durable, cfg.Stream, m, cause); err != nil {
		return
	}
	if err := m.Term(); err != nil {
		b.opts.Logger.WarnContext(ctx, "term failed", "err", err)
	}
}

// DeadLetter copies m to PARLEY_DLQ (subject parley.dlq.<consumer>) with
// cause as its reason, idempotently (the copy's message id is the
// consumer, stream and stream sequence).
func (b *Bus) DeadLetter(ctx context.Context, consumer, stream string, m LogMsg, cause error) error {
	return b.deadLetterMsg(ctx, consumer, stream, m.msg, cause)
}

// deadLetterMsg is DeadLetter of a JetStream message; it does not
// acknowledge m.
func (b *Bus) deadLetterMsg(ctx context.Context, consumer, stream string, m jetstream.Msg, cause error) error {
	meta, _ := m.Metadata()
	var seq, delivered uint64
	if meta != nil {
		seq, delivered = meta.Sequence.Stream, meta.NumDelivered
	}
	dl := nats.NewMsg(DLQSubjectPrefix + "." + consumer)
	dl.Data = m.Data()
	for k, v := range m.Headers() {
		// Nats-* headers are JetStream instructions (message id, expected
		// stream, ...) that must not apply to the copy.
		if strings.HasPrefix(strings.ToLower(k), "nats-") {
			continue
		}
		dl.Header[k] = v
	}
	dl.Header.Set(HeaderDLQSubject, m.Subject())
	dl.Header.Set(HeaderDLQSequence, strconv.FormatUint(seq, 10))
	dl.Header.Set(HeaderDLQConsumer, consumer)
	dl.Header.Set(HeaderDLQError, truncate(cause.Error(), 1024))
	dl.Header.Set(HeaderDLQAttempts, strconv.FormatUint(delivered, 10))
	pctx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	if _, err := b.js.PublishMsg(pctx, dl, jetstream.WithMsgID(consumer+":"+stream+":"+strconv.FormatUint(seq, 10))); err != nil {
		b.opts.Logger.ErrorContext(ctx, "dead-letter publish failed; message stays pending", "consumer", consumer, "stream_seq", seq, "err", err)
		return fmt.Errorf("%w: dead-letter: %v", ErrUnavailable, err)
	}
	b.opts.Logger.ErrorContext(ctx, "event dead-lettered", "consumer", consumer, "subject", m.Subject(), "stream_seq", seq, "deliveries", delivered, "err", cause)
	return nil
}

// Decode turns a message of PARLEY_CONV into a Delivery and checks that its
// envelope matches its subject (CheckSubject); its errors are permanent.
func (b *Bus) Decode(m LogMsg) (*Delivery, error) {
	d, err := b.decode(m.msg)
	if err == nil {
		err = CheckSubject(d.Envelope, d.Subject)
	}
	if err != nil {
		return nil, Permanent(err)
	}
	return d, nil
}

func (b *Bus) decode(m jetstream.Msg) (*Delivery, error) {
	env := &eventv1.Envelope{}
	if err := proto.Unmarshal(m.Data(), env); err != nil {
		return nil, fmt.Errorf("decode envelope: %w", err)
	}
	d := &Delivery{Envelope: env, Subject: m.Subject(), msg: m, NumDelivered: 1}
	if meta, err := m.Metadata(); err == nil {
		d.StreamSeq, d.NumDelivered = meta.Sequence.Stream, meta.NumDelivered
	}
	if h := m.Headers(); h != nil {
		pctx := b.opts.Propagator.Extract(context.Background(), propagation.HeaderCarrier(h))
		d.SpanContext = trace.SpanContextFromContext(pctx)
	}
	return d, nil
}

// CheckSubject verifies that env names the tenant and conversation of the
// conversation subject it was stored on. Every consumer scopes its state by
// the envelope's tenant, while stream permissions and ingest's checks are
// about subjects: an envelope that claims another tenant or conversation
// than its subject is refused (dead-lettered) instead of trusted.
func CheckSubject(env *eventv1.Envelope, subject string) error {
	tenant, conv, _, err := ParseConvSubject(subject)
	if err != nil {
		return err
	}
	if env.GetTenantId() != tenant || env.GetConversationId() != conv {
		return fmt.Errorf("%w: envelope tenant_id %q, conversation_id %q on the subject of tenant %q, conversation %q",
			ErrSubjectMismatch, env.GetTenantId(), env.GetConversationId(), tenant, conv)
	}
	return nil
}

// ErrSubjectMismatch marks an event whose envelope names another tenant or
// conversation than its subject.
var ErrSubjectMismatch = errors.New("eventbus: envelope does not match its subject")

// keepAlive tells the server the batch is still being worked on, so a slow
// handler is not mistaken for a crashed one.
func keepAlive(ctx context.Context, ds []*Delivery, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				for _, d := range ds {
					_ = d.msg.InProgress()
				}
			}
		}
	}()
	return func() { cancel(); <-done }
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
