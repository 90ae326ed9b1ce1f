// Package outbox publishes the derived events that tagging wrote to its
// outbox table in the same transaction as the state that caused them, then
// deletes them (libs/outbox is the relay core). A row whose publish failed
// stays and is retried (Run drains leftovers on start, periodically and at
// shutdown), so an event is never lost to a crash; deterministic event ids, sent as Nats-Msg-Id, keep a retry from
// being stored twice within JetStream's duplicate window, and consumers key
// on event_id beyond it.
package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	liboutbox "github.com/parley-dev/parley/libs/outbox"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/tagging/internal/store"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"
)

// Publisher is the part of the event bus the relay needs.
type Publisher interface {
	Publish(ctx context.Context, env *eventv1.Envelope) (eventbus.PubAck, error)
}

// Relay drains the outbox.
type Relay struct {
	bus       Publisher
	log       *slog.Logger
	published metric.Int64Counter
	core      *liboutbox.Relay[store.OutboxRow]
}

// New returns a relay. meter may be nil.
func New(st *store.Store, bus Publisher, log *slog.Logger, meter metric.Meter) *Relay {
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Relay{bus: bus, log: log}
	r.published, _ = meter.Int64Counter("parley.tagging.events.published",
		metric.WithDescription("Events tagging appended to PARLEY_CONV from its outbox, by kind"))
	r.core = liboutbox.New[store.OutboxRow](st, r.apply, liboutbox.Options{
		DrainOnStart: true, ShutdownDrain: 5 * time.Second, Log: log,
	})
	return r
}

// Kick asks Run to drain soon.
func (r *Relay) Kick() { r.core.Kick() }

// Drain publishes every pending row in order and deletes it. It stops at the
// first failure, leaving that row and the rows after it for a retry, so the
// events of one conversation are appended in the order they were derived.
func (r *Relay) Drain(ctx context.Context) error { return r.core.Drain(ctx) }

// Run drains leftovers at start, then whenever kicked, and every interval
// while rows may be left after a failure, until ctx is cancelled; then it
// publishes what the last batches left, within a shutdown bound.
func (r *Relay) Run(ctx context.Context, interval time.Duration) error {
	return r.core.Run(ctx, interval)
}

// apply publishes rows one by one in order, up to the first failure.
func (r *Relay) apply(ctx context.Context, rows []store.OutboxRow) (done []int64, failed error) {
	done = make([]int64, 0, len(rows))
	for _, row := range rows {
		env := &eventv1.Envelope{}
		if err := proto.Unmarshal(row.Envelope, env); err != nil {
			// Cannot happen for rows this service wrote; drop it loudly
			// rather than block every later event.
			r.log.ErrorContext(ctx, "undecodable outbox row dropped", "id", row.ID, "err", err)
			done = append(done, row.ID)
			continue
		}
		if _, err := r.bus.Publish(ctx, env); err != nil {
			return done, fmt.Errorf("outbox: publish %s %s: %w", eventbus.Kind(env), env.GetEventId(), err)
		}
		r.published.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", eventbus.Kind(env))))
		done = append(done, row.ID)
	}
	return done, nil
}
