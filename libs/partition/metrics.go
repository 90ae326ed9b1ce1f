package partition

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metric names a Consumer registers on its Config.Meter. Gauges carry the
// attributes consumer and (positions, lag) partition, for the partitions
// this replica owns.
const (
	MetricPosition = "parley.partition.position"
	MetricLag      = "parley.partition.lag"
	MetricHeld     = "parley.partition.held_conversations"
	MetricPauses   = "parley.partition.pauses"
)

// gauges is what a consumer last knew of its owned partitions, observed by
// the meter's callbacks.
type gauges struct {
	mu    sync.Mutex
	owned map[int]uint64 // partition -> stored position
	last  uint64         // stream's last sequence as last seen when reading
	held  int
}

// set records the owned partitions' positions and the held count.
func (g *gauges) set(owned map[int]Lease, pos []uint64, held int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.owned = make(map[int]uint64, len(owned))
	for p := range owned {
		g.owned[p] = pos[p]
	}
	g.held = held
}

func (g *gauges) seen(last uint64) {
	g.mu.Lock()
	g.last = max(g.last, last)
	g.mu.Unlock()
}

// Lag is how far a partition's position is behind the stream's last
// sequence (0 when at or past it).
func Lag(last, position uint64) uint64 {
	if last <= position {
		return 0
	}
	return last - position
}

// register registers the consumer's instruments on m; it returns the pauses
// counter (nil without a meter).
func (g *gauges) register(m metric.Meter, consumer string) metric.Int64Counter {
	if m == nil {
		return nil
	}
	group := attribute.String("consumer", consumer)
	pos, _ := m.Int64ObservableGauge(MetricPosition, metric.WithDescription("Stored position (last committed stream sequence) of each owned partition"))
	lag, _ := m.Int64ObservableGauge(MetricLag, metric.WithDescription("Stream last sequence minus the stored position of each owned partition"))
	held, _ := m.Int64ObservableGauge(MetricHeld, metric.WithDescription("Conversations the consumer group holds behind a dead-lettered event"))
	pauses, _ := m.Int64Counter(MetricPauses, metric.WithDescription("Times the consumer paused on a transient failure"))
	_, _ = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		g.mu.Lock()
		defer g.mu.Unlock()
		for p, at := range g.owned {
			attrs := metric.WithAttributes(group, attribute.Int("partition", p))
			o.ObserveInt64(pos, int64(at), attrs)
			o.ObserveInt64(lag, int64(Lag(g.last, at)), attrs)
		}
		o.ObserveInt64(held, int64(g.held), metric.WithAttributes(group))
		return nil
	}, pos, lag, held)
	return pauses
}
