// Package outbox turns committed state changes into their effects: it
// publishes the derived events that were written to the outbox table in the
// same transaction as the change, records ended conversations in the fast
// view (PARLEY_CONV_ENDED), and deletes the rows once done. A row whose
// publish failed stays and is retried by Run, so an effect is never lost to
// a crash, and deterministic event ids (sent as Nats-Msg-Id) keep a retry
// from being stored twice.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/lifecycle/internal/machine"
	"github.com/parley-dev/parley/services/lifecycle/internal/store"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"
)

// Rows turns a machine output into outbox rows. cause is the event that
// caused it (nil for sweeps and API calls).
func Rows(st machine.State, out machine.Output, cause *eventv1.Envelope) ([]store.OutboxRow, error) {
	var rows []store.OutboxRow
	var causeAt time.Time
	if cause != nil && cause.GetRecordedAt() != nil {
		causeAt = cause.GetRecordedAt().AsTime()
	}
	viewDone := false
	for _, env := range out.Emit {
		b, err := proto.Marshal(env)
		if err != nil {
			return nil, fmt.Errorf("outbox: marshal %s: %w", env.GetKind(), err)
		}
		r := store.OutboxRow{
			TenantID: env.GetTenantId(), ConversationID: env.GetConversationId(), Kind: eventbus.Kind(env),
			EventID: env.GetEventId(), Envelope: b, CauseRecordedAt: causeAt,
		}
		if out.Ended && !viewDone && r.Kind == "conversation_ended" {
			r.ViewEndedAt, r.ViewEndReason, viewDone = st.EndedAt, st.EndReason, true
		}
		rows = append(rows, r)
	}
	if out.Ended && !viewDone {
		rows = append(rows, store.OutboxRow{
			TenantID: st.TenantID, ConversationID: st.ConversationID, Kind: "conversation_ended",
			ViewEndedAt: st.EndedAt, ViewEndReason: st.EndReason,
		})
	}
	return rows, nil
}

// Publisher is the part of the event bus the relay needs.
type Publisher interface {
	Publish(ctx context.Context, env *eventv1.Envelope) (eventbus.PubAck, error)
	JetStream() jetstream.JetStream
}

// Config configures a Relay.
type Config struct {
	Store *store.Store
	Bus   Publisher
	View  *convview.Writer
	// DuplicateWindow of PARLEY_CONV: an effect caused by an event older
	// than half of it is checked against the stream before it is published,
	// because JetStream no longer remembers its id.
	DuplicateWindow time.Duration
	// ViewTTL: ends older than this are not written to the view (its
	// readers would drop them anyway).
	ViewTTL time.Duration
	Clock   func() time.Time
	Log     *slog.Logger
	Meter   metric.Meter
}

// Relay drains the outbox.
type Relay struct {
	cfg    Config
	mu     sync.Mutex
	stream jetstream.Stream
	ended  metric.Int64Counter
	events metric.Int64Counter
	kick   chan struct{}
}

// New returns a relay.
func New(cfg Config) *Relay {
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	r := &Relay{cfg: cfg, kick: make(chan struct{}, 1)}
	r.ended, _ = cfg.Meter.Int64Counter("parley.lifecycle.conversations.ended",
		metric.WithDescription("ConversationEnded events lifecycle appended, by end reason"))
	r.events, _ = cfg.Meter.Int64Counter("parley.lifecycle.events.published",
		metric.WithDescription("Events lifecycle appended to PARLEY_CONV, by kind"))
	return r
}

// Drain applies every pending outbox row in order. It stops at the first
// row that fails (leaving it and the rows after it for a retry), so the
// events of one conversation are appended in the order they were derived.
func (r *Relay) Drain(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		rows, err := r.cfg.Store.PendingOutbox(ctx, 500)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		done := make([]int64, 0, len(rows))
		var failed error
		for _, row := range rows {
			if err := r.apply(ctx, row); err != nil {
				failed = err
				break
			}
			done = append(done, row.ID)
		}
		if err := r.cfg.Store.DeleteOutbox(ctx, done); err != nil {
			return err
		}
		if failed != nil {
			return failed
		}
		if len(rows) < 500 {
			return nil
		}
	}
}

// Kick asks Run to drain soon (after a failed drain).
func (r *Relay) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run retries leftovers (after a crash or a failed publish) every interval
// until ctx ends.
func (r *Relay) Run(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.kick:
		}
		if err := r.Drain(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Log.WarnContext(ctx, "outbox: effects not applied yet; will retry", "err", err)
		}
	}
}

func (r *Relay) apply(ctx context.Context, row store.OutboxRow) error {
	if row.Envelope != nil {
		env := &eventv1.Envelope{}
		if err := proto.Unmarshal(row.Envelope, env); err != nil {
			// Cannot happen for rows we wrote; do not block the outbox on it.
			r.cfg.Log.ErrorContext(ctx, "outbox: undecodable row dropped", "id", row.ID, "err", err)
			return nil
		}
		stored, err := r.alreadyStored(ctx, row)
		if err != nil {
			return err
		}
		if !stored {
			ack, err := r.cfg.Bus.Publish(ctx, env)
			if err != nil {
				return fmt.Errorf("outbox: publish %s %s: %w", row.Kind, row.EventID, err)
			}
			if !ack.Duplicate {
				r.count(ctx, env)
			}
		}
	}
	if !row.ViewEndedAt.IsZero() && r.cfg.View != nil && row.ViewEndedAt.After(r.cfg.Clock().Add(-r.cfg.ViewTTL)) {
		if err := r.cfg.View.MarkEnded(ctx, row.TenantID, row.ConversationID, row.ViewEndedAt, row.ViewEndReason); err != nil {
			return fmt.Errorf("outbox: ended view: %w", err)
		}
	}
	return nil
}

// alreadyStored reports whether the row's event is already in the stream
// where JetStream's duplicate window cannot tell: conversation_ended and
// engagement_classified (at most one per conversation, last message on their
// subject) and operator_no_response (rare, decided by the sweeper) are
// always checked; late_event_recorded when its cause is older than half the
// duplicate window (a replay or a very late redelivery).
func (r *Relay) alreadyStored(ctx context.Context, row store.OutboxRow) (bool, error) {
	unique := row.Kind == "conversation_ended" || row.Kind == "engagement_classified"
	old := !row.CauseRecordedAt.IsZero() && row.CauseRecordedAt.Before(r.cfg.Clock().Add(-r.cfg.DuplicateWindow/2))
	if !unique && !old && row.Kind != "operator_no_response" {
		return false, nil
	}
	st, err := r.convStream(ctx)
	if err != nil {
		return false, err
	}
	subject := eventbus.ConvSubject(row.TenantID, row.ConversationID, row.Kind)
	if unique {
		m, err := st.GetLastMsgForSubject(ctx, subject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("outbox: look up %s: %w", subject, err)
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != row.EventID {
			r.cfg.Log.WarnContext(ctx, "outbox: the log already ends this conversation with another event; not appending",
				"subject", subject, "event_id", row.EventID, "stored_event_id", id)
		}
		return true, nil
	}
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("outbox: look up %s: %w", subject, err)
		}
		if m.Header.Get(jetstream.MsgIDHeader) == row.EventID {
			return true, nil
		}
		seq = m.Sequence + 1
	}
}

func (r *Relay) convStream(ctx context.Context) (jetstream.Stream, error) {
	if r.stream != nil {
		return r.stream, nil
	}
	st, err := r.cfg.Bus.JetStream().Stream(ctx, eventbus.ConvStream)
	if err != nil {
		return nil, fmt.Errorf("outbox: stream %s: %w", eventbus.ConvStream, err)
	}
	r.stream = st
	return st, nil
}

func (r *Relay) count(ctx context.Context, env *eventv1.Envelope) {
	kind := eventbus.Kind(env)
	r.events.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind)))
	if ce := env.GetConversationEnded(); ce != nil {
		r.ended.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", ce.GetReason().String())))
	}
}
