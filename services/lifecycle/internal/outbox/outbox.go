// Package outbox turns committed state changes into their effects: it
// publishes the derived events that were written to the outbox table in the
// same transaction as the change, records ended conversations in the fast
// view (PARLEY_CONV_ENDED), and deletes the rows once done. A row whose
// publish failed stays and is retried by Run, so an effect is never lost to
// a crash, and deterministic event ids (sent as Nats-Msg-Id with the tenant) keep a retry
// from being stored twice; conversation_ended and engagement_classified,
// which exist once per conversation, are published only onto an empty
// subject, so not even a retry long after the duplicate window stores them
// twice.
//
// The relay runs beside the consumer: the consumer commits a batch and
// kicks it, and it publishes while the next batch is applied, the rows of
// many conversations at once.
package outbox

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	liboutbox "github.com/parley-dev/parley/libs/outbox"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/lifecycle/internal/machine"
	"github.com/parley-dev/parley/services/lifecycle/internal/store"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
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
	// EncodedMessage, PublishEach, LastOnSubject and NextOnSubject: see
	// eventbus.Bus.
	EncodedMessage(ctx context.Context, env *eventv1.Envelope, data []byte, expectEmpty bool) (*nats.Msg, error)
	PublishEach(ctx context.Context, msgs []*nats.Msg) ([]eventbus.PubAck, []error)
	LastOnSubject(ctx context.Context, subject string) (eventbus.StoredMsg, bool, error)
	NextOnSubject(ctx context.Context, seq uint64, subject string) (eventbus.StoredMsg, bool, error)
	// PublishAtomic stores msgs as one JetStream atomic batch (see
	// eventbus.Bus.PublishAtomic).
	PublishAtomic(ctx context.Context, msgs []*nats.Msg) (uint64, error)
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
	// PublishTimeout bounds one write of the ended-conversations view
	// (default 5s); the bus's own PublishTimeout bounds the wait for the
	// acknowledgements of one round of publishes.
	PublishTimeout time.Duration
	Clock          func() time.Time
	Log            *slog.Logger
	Meter          metric.Meter
	Tracer         trace.Tracer
}

// PageSize is the most outbox rows one drain step reads and publishes
// together.
const PageSize = 500

// Relay drains the outbox.
type Relay struct {
	cfg  Config
	core *liboutbox.Relay[store.OutboxRow]
	// noBatch: the stream refused an atomic batch as disabled.
	noBatch atomic.Bool
	ended   metric.Int64Counter
	events  metric.Int64Counter
}

// New returns a relay.
func New(cfg Config) *Relay {
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	if cfg.Tracer == nil {
		cfg.Tracer = tracenoop.NewTracerProvider().Tracer("")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 5 * time.Second
	}
	r := &Relay{cfg: cfg}
	r.core = liboutbox.New[store.OutboxRow](cfg.Store, r.applyPage, liboutbox.Options{PageSize: PageSize, Log: cfg.Log})
	r.ended, _ = cfg.Meter.Int64Counter("parley.lifecycle.conversations.ended",
		metric.WithDescription("ConversationEnded events lifecycle appended, by end reason"))
	r.events, _ = cfg.Meter.Int64Counter("parley.lifecycle.events.published",
		metric.WithDescription("Events lifecycle appended to PARLEY_CONV, by kind"))
	return r
}

// Drain applies every pending outbox row, a page at a time (see
// applyPage). The rows of one conversation are applied in order: when one
// fails, it and the conversation's rows after it stay in the outbox, and
// Drain returns the error after the page (the rows of other conversations
// in the page are applied).
func (r *Relay) Drain(ctx context.Context) error { return r.core.Drain(ctx) }

// Kick asks Run to drain now. Kicks while a drain is running are folded
// into one more drain after it.
func (r *Relay) Kick() { r.core.Kick() }

// Run drains whenever kicked (after each committed change) and every
// interval (leftovers after a crash or a failed publish) until ctx ends.
func (r *Relay) Run(ctx context.Context, interval time.Duration) error {
	return r.core.Run(ctx, interval)
}

// step is what remains to be done for one outbox row: publish its event
// (env set) and then record the end in the view (view set).
type step struct {
	row  store.OutboxRow
	env  *eventv1.Envelope
	view bool
	// checked: the duplicate look-up for a kind JetStream cannot
	// deduplicate by itself has been done.
	checked bool
	err     error
}

func (s *step) finished() bool { return s.env == nil && !s.view }

// applyPage applies a page of rows (in id order) and returns the ids of
// those that are done, and the first failure.
//
// Rows of different conversations are independent, so they go out
// together, in rounds: each round publishes, for every conversation, its
// next event (all in one atomic batch: one stream write and one fsync),
// and waits until they are stored. A row's view update goes out in the
// round after its event (the view never says ended before the log does),
// together with the conversation's next event. A failure stops its
// conversation for this page, so a conversation's events are appended in
// the order they were derived; the other conversations go on. A typical
// page (conversations ending: conversation_ended with its view update,
// engagement_classified) takes two rounds.
func (r *Relay) applyPage(ctx context.Context, rows []store.OutboxRow) (done []int64, failed error) {
	ctx, span := r.cfg.Tracer.Start(ctx, "publish outbox", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.Int("messaging.batch.message_count", len(rows))))
	defer span.End()
	viewFrom := r.cfg.Clock().Add(-r.cfg.ViewTTL)
	queues := map[store.Key][]*step{}
	var order []store.Key
	for _, row := range rows {
		s := &step{row: row, view: !row.ViewEndedAt.IsZero() && r.cfg.View != nil && row.ViewEndedAt.After(viewFrom)}
		if row.Envelope != nil {
			env := &eventv1.Envelope{}
			if err := proto.Unmarshal(row.Envelope, env); err != nil {
				// Cannot happen for rows we wrote; do not block the outbox on it.
				r.cfg.Log.ErrorContext(ctx, "outbox: undecodable row dropped", "id", row.ID, "err", err)
				done = append(done, row.ID)
				continue
			}
			s.env = env
		}
		k := store.Key{TenantID: row.TenantID, ConversationID: row.ConversationID}
		if _, ok := queues[k]; !ok {
			order = append(order, k)
		}
		queues[k] = append(queues[k], s)
	}
	for {
		var pubs, views []*step
		for _, k := range order {
			q := queues[k]
			for len(q) > 0 && q[0].finished() {
				done = append(done, q[0].row.ID)
				q = q[1:]
			}
			queues[k] = q
			if len(q) == 0 {
				continue
			}
			head := q[0]
			switch {
			case head.env != nil:
				pubs = append(pubs, head)
			case len(q) > 1 && q[1].env != nil:
				views = append(views, head)
				pubs = append(pubs, q[1])
			default:
				views = append(views, head)
			}
		}
		if len(pubs) == 0 && len(views) == 0 {
			break
		}
		r.round(ctx, pubs, views)
		for _, k := range order {
			q := queues[k]
			if !slices.ContainsFunc(q, func(s *step) bool { return s.err != nil }) {
				continue
			}
			// Stop the conversation at the failed row: it and the rows after
			// it stay for a retry.
			for len(q) > 0 && q[0].err == nil && q[0].finished() {
				done = append(done, q[0].row.ID)
				q = q[1:]
			}
			failed = cmp.Or(failed, q[0].err)
			delete(queues, k)
		}
		order = slices.DeleteFunc(order, func(k store.Key) bool { _, ok := queues[k]; return !ok })
	}
	if failed != nil {
		span.RecordError(failed)
		span.SetStatus(codes.Error, failed.Error())
	}
	return done, failed
}

// round publishes pubs' events, as one atomic batch when there are
// several (else, or when the batch is refused, each on its own,
// asynchronously), writes views' ends to the view concurrently, waits for
// all of them, and records each step's outcome: a finished part is
// cleared, a failure is set in err.
func (r *Relay) round(ctx context.Context, pubs, views []*step) {
	var wg sync.WaitGroup
	if len(views) > 1 {
		// One atomic batch for the round's view entries; if it fails, each
		// is written on its own below and fails or succeeds alone.
		entries := make([]convview.Entry, len(views))
		for i, s := range views {
			entries[i] = convview.Entry{TenantID: s.row.TenantID, ConversationID: s.row.ConversationID, At: s.row.ViewEndedAt, Reason: s.row.ViewEndReason}
		}
		if err := r.cfg.View.MarkEndedAll(ctx, entries); err == nil {
			for _, s := range views {
				s.view = false
			}
			views = nil
		} else {
			r.cfg.Log.DebugContext(ctx, "outbox: ended-view batch not stored; writing entries one by one", "entries", len(entries), "err", err)
		}
	}
	for _, s := range views {
		wg.Go(func() {
			vctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
			defer cancel()
			if err := r.cfg.View.MarkEnded(vctx, s.row.TenantID, s.row.ConversationID, s.row.ViewEndedAt, s.row.ViewEndReason); err != nil {
				s.err = fmt.Errorf("outbox: ended view: %w", err)
				return
			}
			s.view = false
		})
	}
	defer wg.Wait()
	var (
		ready []*step
		msgs  []*nats.Msg
	)
	for _, s := range pubs {
		stored, err := r.alreadyStored(ctx, s)
		if err != nil {
			s.err = err
			continue
		}
		if stored {
			s.env = nil
			continue
		}
		msg, err := r.message(ctx, s)
		if err != nil {
			s.err = err
			continue
		}
		ready, msgs = append(ready, s), append(msgs, msg)
	}
	if len(msgs) > 1 && !r.noBatch.Load() {
		_, err := r.cfg.Bus.PublishAtomic(ctx, msgs)
		if err == nil {
			for _, s := range ready {
				r.count(ctx, s.env)
				s.env = nil
			}
			return
		}
		if eventbus.IsAtomicDisabled(err) {
			r.noBatch.Store(true)
			r.cfg.Log.WarnContext(ctx, "outbox: atomic batches are disabled on the stream; publishing one message at a time", "stream", eventbus.ConvStream)
		}
		// Another outcome (an event already stored, a timeout) is settled
		// message by message: what the batch stored is then reported as a
		// duplicate or as stored on its unique subject.
		r.cfg.Log.DebugContext(ctx, "outbox: atomic batch not stored; publishing one by one", "messages", len(msgs), "err", err)
	}
	r.publishEach(ctx, ready, msgs)
}

// publishEach publishes msgs one message each, asynchronously, waits for
// every acknowledgement and records each step's outcome.
func (r *Relay) publishEach(ctx context.Context, steps []*step, msgs []*nats.Msg) {
	acks, errs := r.cfg.Bus.PublishEach(ctx, msgs)
	for i, s := range steps {
		switch err := errs[i]; {
		case err == nil:
			if !acks[i].Duplicate {
				r.count(ctx, s.env)
			}
			s.env = nil
		case eventbus.IsSubjectNotEmpty(err) && unique(s.row.Kind):
			// The subject already holds this kind's one event: ours (a
			// retry) or one the log had before (a rebuild).
			r.logConflict(ctx, s.row)
			s.env = nil
		default:
			s.err = fmt.Errorf("outbox: publish %s %s: %w", s.row.Kind, s.row.EventID, err)
		}
	}
}

// message builds the NATS message of a step's event: the tenant's event id
// as Nats-Msg-Id (eventbus.MsgID; JetStream drops a retry within the
// duplicate window), the expected stream, and for a kind that exists at most
// once per conversation the expectation that its subject is still empty.
func (r *Relay) message(ctx context.Context, s *step) (*nats.Msg, error) {
	// A unique kind replaces a look-up per event: JetStream refuses the
	// publish when the subject already holds a message, at any age (the
	// duplicate window only covers recent ids).
	msg, err := r.cfg.Bus.EncodedMessage(ctx, s.env, s.row.Envelope, unique(eventbus.Kind(s.env)))
	if err != nil {
		return nil, fmt.Errorf("outbox: %s %s: %w", s.row.Kind, s.row.EventID, err)
	}
	return msg, nil
}

// unique reports whether a kind exists at most once per conversation, as
// the last (and only) message on its subject.
func unique(kind string) bool {
	return kind == "conversation_ended" || kind == "engagement_classified"
}

// logConflict warns when the stored event on a unique subject is not the
// row's (the log already ends the conversation with another event).
func (r *Relay) logConflict(ctx context.Context, row store.OutboxRow) {
	subject := eventbus.ConvSubject(row.TenantID, row.ConversationID, row.Kind)
	m, found, err := r.cfg.Bus.LastOnSubject(ctx, subject)
	if err != nil || !found {
		return
	}
	if id := m.EventID(row.TenantID); id != row.EventID {
		r.cfg.Log.WarnContext(ctx, "outbox: the log already ends this conversation with another event; not appending",
			"subject", subject, "event_id", row.EventID, "stored_event_id", id)
	}
}

// alreadyStored reports whether a step's event is already in the stream
// where neither JetStream's duplicate window nor the unique-subject
// expectation can tell: operator_no_response (rare, decided by the sweeper)
// is always checked, late_event_recorded when its cause is older than half
// the duplicate window (a replay or a very late redelivery).
func (r *Relay) alreadyStored(ctx context.Context, s *step) (bool, error) {
	row := s.row
	if s.checked || unique(row.Kind) {
		return false, nil
	}
	old := !row.CauseRecordedAt.IsZero() && row.CauseRecordedAt.Before(r.cfg.Clock().Add(-r.cfg.DuplicateWindow/2))
	if !old && row.Kind != "operator_no_response" {
		return false, nil
	}
	subject := eventbus.ConvSubject(row.TenantID, row.ConversationID, row.Kind)
	for seq := uint64(1); ; {
		m, found, err := r.cfg.Bus.NextOnSubject(ctx, seq, subject)
		if err != nil {
			return false, fmt.Errorf("outbox: look up %s: %w", subject, err)
		}
		if !found {
			s.checked = true
			return false, nil
		}
		if m.EventID(row.TenantID) == row.EventID {
			return true, nil
		}
		seq = m.Sequence + 1
	}
}

func (r *Relay) count(ctx context.Context, env *eventv1.Envelope) {
	kind := eventbus.Kind(env)
	r.events.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", kind)))
	if ce := env.GetConversationEnded(); ce != nil {
		r.ended.Add(ctx, 1, metric.WithAttributes(attribute.String("reason", ce.GetReason().String())))
	}
}
