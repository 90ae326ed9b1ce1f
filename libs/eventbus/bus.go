package eventbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ErrUnavailable wraps failures that mean the event log could not be reached
// or did not confirm in time; the caller may retry. Nothing was acknowledged.
var ErrUnavailable = errors.New("eventbus: event log unavailable")

// Options configure a Bus.
type Options struct {
	// Producer is the service name written into envelopes it completes.
	Producer string
	// Replicas of the streams created by EnsureStreams (default 1).
	Replicas int
	// DuplicateWindow of PARLEY_CONV (default 2 minutes).
	DuplicateWindow time.Duration
	// PublishTimeout bounds one publish round trip (default 5s).
	PublishTimeout time.Duration
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
}

// Bus publishes and consumes Parley events over one NATS connection.
type Bus struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	opts   Options
	tracer trace.Tracer

	streamMu sync.Mutex
	stream   jetstream.Stream // PARLEY_CONV handle (convStream)
}

// New wraps a NATS connection.
func New(nc *nats.Conn, opts Options) (*Bus, error) {
	// Pipelined publishing keeps up to a few commits' events unacknowledged
	// (bounded by the committer's in-flight limit, not by the client's
	// default of 4,000, which concurrent 1000-event requests exceed).
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1<<16))
	if err != nil {
		return nil, fmt.Errorf("eventbus: jetstream: %w", err)
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.DuplicateWindow <= 0 {
		opts.DuplicateWindow = 2 * time.Minute
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = noop.NewTracerProvider()
	}
	if opts.Propagator == nil {
		opts.Propagator = propagation.TraceContext{}
	}
	return &Bus{nc: nc, js: js, opts: opts, tracer: opts.TracerProvider.Tracer("github.com/parley-dev/parley/libs/eventbus")}, nil
}

// Connect dials NATS with reconnects forever and wraps the connection.
// extra adds connection options, e.g. credentials and TLS
// (natsauth.ClientOptions).
func Connect(ctx context.Context, url, name string, opts Options, extra ...nats.Option) (*Bus, error) {
	nopts := append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		// Fail fast while disconnected instead of buffering publishes that
		// the caller will already have been told failed.
		nats.ReconnectBufSize(-1),
	}, extra...)
	nc, err := nats.Connect(url, nopts...)
	if err != nil {
		return nil, fmt.Errorf("%w: connect %s: %v", ErrUnavailable, url, err)
	}
	b, err := New(nc, opts)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

// JetStream exposes the underlying JetStream client. It stays for tests,
// which inject faults the Bus has no operation for (raw publishes, stream
// edits), and for natsauth.WaitForStreams at service start; everything else
// reads and manages the log through the Bus's operations (Read,
// StreamState, ConsumerLag, LastOnSubject, DeleteConsumer, KeyValue, ...).
// TestLogSealed keeps it that way.
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn exposes the NATS connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Close drains the connection: pending publishes are flushed and
// subscriptions finish their in-flight messages.
func (b *Bus) Close() error {
	if b.nc.IsClosed() {
		return nil
	}
	return b.nc.Drain()
}

// Ready reports whether the connection is up and JetStream answers.
func (b *Bus) Ready(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("%w: not connected (%s)", ErrUnavailable, b.nc.Status())
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := b.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return nil
}

// EnsureStreams creates or updates PARLEY_CONV and PARLEY_DLQ.
func (b *Bus) EnsureStreams(ctx context.Context) error {
	streams := []jetstream.StreamConfig{
		{
			Name:               ConvStream,
			Description:        "Parley conversation events (source of truth)",
			Subjects:           []string{ConvSubjectPrefix + ".>"},
			Storage:            jetstream.FileStorage,
			Retention:          jetstream.LimitsPolicy,
			Replicas:           b.opts.Replicas,
			Duplicates:         b.opts.DuplicateWindow,
			AllowAtomicPublish: true,
		},
		{
			Name:        DLQStream,
			Description: "Parley dead letters: messages a consumer gave up on",
			Subjects:    []string{DLQSubjectPrefix + ".>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Replicas:    b.opts.Replicas,
			MaxAge:      30 * 24 * time.Hour,
			Duplicates:  b.opts.DuplicateWindow,
		},
	}
	for _, cfg := range streams {
		_, err := b.js.CreateOrUpdateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another process created it between our lookup and create.
			_, err = b.js.CreateOrUpdateStream(ctx, cfg)
		}
		if err != nil {
			return fmt.Errorf("eventbus: stream %s: %w", cfg.Name, classify(err))
		}
	}
	return nil
}

// PubAck is the result of storing one event.
type PubAck struct {
	Sequence  uint64
	Duplicate bool
}

// Complete fills the server-side envelope fields that are still empty:
// kind, recorded_at and producer.
func (b *Bus) Complete(env *eventv1.Envelope, now time.Time) {
	completeEnvelope(env, b.opts.Producer, now)
}

func completeEnvelope(env *eventv1.Envelope, producer string, now time.Time) {
	env.Kind = Kind(env)
	if env.RecordedAt == nil {
		env.RecordedAt = timestampOf(now)
	}
	if env.Producer == "" {
		env.Producer = producer
	}
}

// Validate checks the fields every stored envelope must have.
func Validate(env *eventv1.Envelope) error {
	switch {
	case env.GetEventId() == "":
		return errors.New("event_id is required")
	case !ValidTenantID(env.GetTenantId()):
		return fmt.Errorf("tenant_id %q is not subject-safe ([A-Za-z0-9_-]{1,64})", env.GetTenantId())
	case !ValidConversationID(env.GetConversationId()):
		return fmt.Errorf("conversation_id %q is not subject-safe ([A-Za-z0-9_-]{1,128})", env.GetConversationId())
	case Kind(env) == "":
		return ErrNoPayload
	}
	return nil
}

// Publish stores one envelope in PARLEY_CONV and returns once JetStream has
// acknowledged it. The tenant's event id is sent as Nats-Msg-Id (MsgID), so
// a retry within the duplicate window is reported as Duplicate and stored
// only once. The current
// trace context travels in the message headers.
func (b *Bus) Publish(ctx context.Context, env *eventv1.Envelope) (PubAck, error) {
	ctx, span := b.tracer.Start(ctx, "publish "+Kind(env),
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.message.id", env.GetEventId()),
			attribute.String("parley.tenant_id", env.GetTenantId()),
			attribute.String("parley.conversation_id", env.GetConversationId()),
		))
	defer span.End()
	msg, err := b.message(ctx, env, time.Now())
	if err != nil {
		return PubAck{}, err
	}
	span.SetAttributes(attribute.String("messaging.destination.name", msg.Subject))
	ack, err := b.publishMsg(ctx, msg)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return PubAck{}, err
	}
	span.SetAttributes(attribute.Int64("messaging.nats.stream_sequence", int64(ack.Sequence)), attribute.Bool("parley.duplicate", ack.Duplicate))
	return ack, nil
}

// classify marks connectivity and timeout failures as ErrUnavailable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, ErrUnavailable):
		return err
	case errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders),
		errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, jetstream.ErrTooManyStalledMsgs),
		errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// MaxPayload is the largest message (data and headers) the connected server
// accepts, its max_payload; 0 before the first connection.
func (b *Bus) MaxPayload() int64 { return b.nc.MaxPayload() }

// Replicas is the replica count the bus creates streams and buckets with.
func (b *Bus) Replicas() int { return b.opts.Replicas }

// DuplicateWindow is how long PARLEY_CONV remembers event ids: a resend
// within it is answered as a duplicate.
func (b *Bus) DuplicateWindow() time.Duration { return b.opts.DuplicateWindow }
