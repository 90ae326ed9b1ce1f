// Package outbox publishes the derived events that tagging wrote to its
// outbox table in the same transaction as the state that caused them, then
// deletes them. A row whose publish failed stays and is retried (Run drains
// leftovers on start and periodically), so an event is never lost to a
// crash; deterministic event ids, sent as Nats-Msg-Id, keep a retry from
// being stored twice within JetStream's duplicate window, and consumers key
// on event_id beyond it.
package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
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
	store     *store.Store
	bus       Publisher
	log       *slog.Logger
	published metric.Int64Counter
	mu        sync.Mutex
	kick      chan struct{}
}

// New returns a relay. meter may be nil.
func New(st *store.Store, bus Publisher, log *slog.Logger, meter metric.Meter) *Relay {
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	r := &Relay{store: st, bus: bus, log: log, kick: make(chan struct{}, 1)}
	r.published, _ = meter.Int64Counter("parley.tagging.events.published",
		metric.WithDescription("Events tagging appended to PARLEY_CONV from its outbox, by kind"))
	return r
}

// Kick asks Run to drain soon.
func (r *Relay) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Drain publishes every pending row in order and deletes it. It stops at the
// first failure, leaving that row and the rows after it for a retry, so the
// events of one conversation are appended in the order they were derived.
func (r *Relay) Drain(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	const page = 500
	for {
		rows, err := r.store.PendingOutbox(ctx, page)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		done := make([]int64, 0, len(rows))
		var failed error
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
				failed = fmt.Errorf("outbox: publish %s %s: %w", eventbus.Kind(env), env.GetEventId(), err)
				break
			}
			r.published.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", eventbus.Kind(env))))
			done = append(done, row.ID)
		}
		if err := r.store.DeleteOutbox(ctx, done); err != nil {
			return err
		}
		if failed != nil {
			return failed
		}
		if len(rows) < page {
			return nil
		}
	}
}

// Run drains leftovers at start, then whenever kicked, and every interval
// while rows may be left after a failure, until ctx is cancelled.
func (r *Relay) Run(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		interval = 2 * time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := r.Drain(ctx); err != nil && ctx.Err() == nil {
			r.log.WarnContext(ctx, "outbox drain failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			// Publish what the last batches left, within the shutdown bound.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := r.Drain(sctx); err != nil {
				r.log.Warn("outbox drain at shutdown failed; rows stay for the next start", "err", err)
			}
			cancel()
			return nil
		case <-r.kick:
		case <-t.C:
		}
	}
}
