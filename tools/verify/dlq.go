package verify

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/eventbus"
)

// UnknownTenant is the tenant of dead letters whose original subject
// (header Parley-Dlq-Subject) names no tenant: they count for every
// verification, since they may be any tenant's.
const UnknownTenant = "?"

// deadLetters are the dead letters of one tenant.
type deadLetters struct {
	count      int
	byConsumer map[string]int
	// first describes the first MaxIDs: consumer, stream sequence,
	// subject and reason.
	first []string
}

// readDLQ reads the headers of every message in PARLEY_DLQ and returns the
// dead letters of the given tenants and of no known tenant.
func readDLQ(ctx context.Context, bus *eventbus.Bus, tenants map[string]*tenantExp) (map[string]*deadLetters, error) {
	out := map[string]*deadLetters{}
	s, err := bus.JetStream().Stream(ctx, eventbus.DLQStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("verify: %s: %w", eventbus.DLQStream, err)
	}
	state := s.CachedInfo().State
	if state.Msgs == 0 {
		return out, nil
	}
	cons, err := bus.JetStream().OrderedConsumer(ctx, eventbus.DLQStream, jetstream.OrderedConsumerConfig{HeadersOnly: true})
	if err != nil {
		return nil, fmt.Errorf("verify: reading %s: %w", eventbus.DLQStream, err)
	}
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil, fmt.Errorf("verify: reading %s: %w", eventbus.DLQStream, err)
		}
		done := false
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return nil, fmt.Errorf("verify: reading %s: %w", eventbus.DLQStream, err)
			}
			done = meta.Sequence.Stream >= state.LastSeq || meta.NumPending == 0
			h := m.Headers()
			subject := h.Get(eventbus.HeaderDLQSubject)
			tenant, _, _, perr := eventbus.ParseConvSubject(subject)
			if perr != nil || tenant == "" {
				tenant = UnknownTenant
			} else if tenants[tenant] == nil {
				continue
			}
			d := out[tenant]
			if d == nil {
				d = &deadLetters{byConsumer: map[string]int{}}
				out[tenant] = d
			}
			consumer := h.Get(eventbus.HeaderDLQConsumer)
			d.count++
			d.byConsumer[consumer]++
			if len(d.first) < MaxIDs {
				d.first = append(d.first, fmt.Sprintf("%s seq %s %s: %s", orDash(consumer), orDash(h.Get(eventbus.HeaderDLQSequence)),
					orDash(subject), orDash(h.Get(eventbus.HeaderDLQError))))
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("verify: reading %s: %w", eventbus.DLQStream, err)
		}
		if done || n == 0 {
			return out, nil
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// describe says how many dead letters each consumer gave up on.
func (d *deadLetters) describe() string {
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(d.byConsumer)) {
		parts = append(parts, fmt.Sprintf("%s %d", orDash(c), d.byConsumer[c]))
	}
	return "dead letters in " + eventbus.DLQStream + " (by consumer: " + strings.Join(parts, ", ") + "); first: consumer, stream sequence, subject and reason"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
