package verify

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

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
	state, found, err := bus.StreamState(ctx, eventbus.DLQStream)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if !found || state.Msgs == 0 {
		return out, nil
	}
	r, err := bus.Read(ctx, eventbus.ReadOptions{Stream: eventbus.DLQStream, From: state.FirstSeq, HeadersOnly: true})
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	for {
		done := false
		n, err := r.Fetch(1000, time.Second, func(m eventbus.LogMsg) error {
			done = m.Seq >= state.LastSeq || m.Pending == 0
			h := m.Header()
			subject := h.Get(eventbus.HeaderDLQSubject)
			tenant, _, _, perr := eventbus.ParseConvSubject(subject)
			if perr != nil || tenant == "" {
				tenant = UnknownTenant
			} else if tenants[tenant] == nil {
				return nil
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
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("verify: %w", err)
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
