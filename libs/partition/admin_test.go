package partition_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

func TestLag(t *testing.T) {
	for _, c := range []struct{ last, pos, want uint64 }{{10, 4, 6}, {4, 4, 0}, {3, 4, 0}, {0, 0, 0}} {
		if got := partition.Lag(c.last, c.pos); got != c.want {
			t.Errorf("Lag(%d, %d) = %d, want %d", c.last, c.pos, got, c.want)
		}
	}
}

// metricValue reads one int64 gauge or counter point of the consumer
// "test" (and partition, when part >= 0); ok is false without one.
func metricValue(t *testing.T, r *sdkmetric.ManualReader, name string, part int) (int64, bool) {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	match := func(s attribute.Set) bool {
		if v, _ := s.Value("consumer"); v.AsString() != "test" {
			return false
		}
		v, has := s.Value("partition")
		return part < 0 || (has && v.AsInt64() == int64(part))
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						return p.Value, true
					}
				}
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					if match(p.Attributes) {
						return p.Value, true
					}
				}
			}
		}
	}
	return 0, false
}

// A held conversation released with partition.Release has its later
// events applied by the running consumer (no restart), and the metrics
// report the owned partition's position and lag, the held count and
// pauses.
func TestReleaseTakesEffectAndMetrics(t *testing.T) {
	ctx := context.Background()
	pool := pool(t)
	srv := testenv.NATS(t)
	bus, err := eventbus.Connect(ctx, srv.URL, "test", eventbus.Options{Producer: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE applied (seq bigint PRIMARY KEY, conv text NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	publish := func(conv, id string) {
		env := &eventv1.Envelope{EventId: id, TenantId: "acme", ConversationId: conv,
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Text: id}}}
		if _, err := bus.Publish(ctx, env); err != nil {
			t.Fatal(err)
		}
	}
	var stall atomic.Bool
	h := func(ctx context.Context, b partition.Batch) error {
		for _, d := range b.Deliveries {
			switch d.Envelope.GetEventId() {
			case "poison":
				return eventbus.Permanent(errors.New("test: refused"))
			case "stall":
				if stall.Load() {
					return errors.New("test: store unreachable")
				}
			}
		}
		return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			for _, d := range b.Deliveries {
				if _, err := tx.Exec(ctx, `INSERT INTO applied VALUES ($1, $2)`, int64(d.StreamSeq), d.Envelope.GetConversationId()); err != nil {
					return err
				}
			}
			return partition.Commit(ctx, tx, b.Lease, b.Last())
		})
	}
	reader := sdkmetric.NewManualReader()
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
	c := partition.NewConsumer(partition.Config{Bus: bus, Pool: pool, Meter: meter, Retry: 100 * time.Millisecond,
		Coordinator: partition.NewCoordinator(pool, "test", "m1", 1, 600*time.Millisecond)})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(cctx, h) }()
	defer func() { cancel(); <-done }()

	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	gauge := func(name string, part int, want int64) func() bool {
		return func() bool { v, ok := metricValue(t, reader, name, part); return ok && v == want }
	}
	publish("c1", "poison") // 1: dead-lettered, c1 held
	publish("c1", "after1") // 2: dead-lettered as held
	publish("c2", "ok")     // 3: applied
	waitFor("position 3", gauge(partition.MetricPosition, 0, 3))
	for name, want := range map[string]int64{partition.MetricLag: 0, partition.MetricHeld: 1} {
		if v, ok := metricValue(t, reader, name, -1); !ok || v != want {
			t.Fatalf("%s = %d (%v), want %d", name, v, ok, want)
		}
	}

	conv := partition.Conversation{TenantID: "acme", ConversationID: "c1"}
	if _, ok, err := partition.Release(ctx, pool, "test", partition.Conversation{TenantID: "globex", ConversationID: "c1"}); err != nil || ok {
		t.Fatalf("another tenant's conversation released: %v %v", ok, err)
	}
	hold, ok, err := partition.Release(ctx, pool, "test", conv)
	if err != nil || !ok || hold.BlockedSeq != 1 || hold.Reason != "test: refused" {
		t.Fatalf("release: %+v %v %v", hold, ok, err)
	}
	waitFor("held 0 after release", gauge(partition.MetricHeld, -1, 0))
	publish("c1", "after2") // 4: applied again
	waitFor("position 4", gauge(partition.MetricPosition, 0, 4))
	var got []int64
	rows, _ := pool.Query(ctx, `SELECT seq FROM applied ORDER BY seq`)
	if got, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil || len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("applied %v %v, want [3 4]", got, err)
	}

	stall.Store(true)
	publish("c2", "stall") // 5: pauses the consumer while stall holds
	waitFor("a pause", func() bool { v, ok := metricValue(t, reader, partition.MetricPauses, -1); return ok && v >= 1 })
	waitFor("lag 1 while paused", gauge(partition.MetricLag, 0, 1))
	if v, _ := metricValue(t, reader, partition.MetricPosition, 0); v != 4 {
		t.Fatalf("position %d while paused, want 4", v)
	}
	stall.Store(false)
	waitFor("position 5 and lag 0", func() bool {
		return gauge(partition.MetricPosition, 0, 5)() && gauge(partition.MetricLag, 0, 0)()
	})
}
