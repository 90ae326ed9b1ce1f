package lifecycle_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/lifecycle/internal/consumer"
	"github.com/parley-dev/parley/services/lifecycle/internal/outbox"
	"github.com/parley-dev/parley/services/lifecycle/internal/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkLifecycleConsumer measures how many events/s lifecycle applies
// (consumer, PostgreSQL, outbox relay and ended view, wired as Run wires
// them) on a real NATS server that fsyncs every write before acknowledging
// (sync_interval: always, the production setting) and real PostgreSQL. b.N
// events of interleaved realistic conversations (several tenants, about 15
// events each, 70% closed, some late messages) are stored first; the clock
// runs from starting the consumer until it has applied them all, published
// every derived event, updated the view and applied its own derived events
// read back from the log (the state the tests call quiet).
//
// Baselines from the same run on the same server: raw-events/s publishes the
// same envelopes one by one, asynchronously, to another stream (what the
// server stores when every message costs one fsync); noop-events/s is a
// durable consumer that acknowledges without doing anything (the ceiling
// of fetch and ack).
//
//	go test ./services/lifecycle -run '^$' -bench LifecycleConsumer -benchtime 20000x
func BenchmarkLifecycleConsumer(b *testing.B) {
	ctx := context.Background()
	n := testenv.NATSWithSync(b, true)
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(b), MaxConns: 10})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool, nil); err != nil {
		b.Fatal(err)
	}
	// Two connections, as in production: ingest's and lifecycle's.
	ingest, err := eventbus.Connect(ctx, n.URL, "bench-ingest", eventbus.Options{Producer: "ingest"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ingest.Close() })
	if err := ingest.EnsureStreams(ctx); err != nil {
		b.Fatal(err)
	}
	bus, err := eventbus.Connect(ctx, n.URL, "bench-lifecycle", eventbus.Options{Producer: "lifecycle"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bus.Close() })

	envs := benchEvents(b.N)
	raw := benchRawPublish(b, ingest, envs)
	// lifecycle starts before the traffic arrives, as in production under
	// live load (it is not replaying a log it found at start).
	lc := newBenchLifecycle(b, bus, pool)
	gc := eventbus.NewGroupCommitter(ingest, eventbus.GroupCommitOptions{})
	for i := 0; i < len(envs); i += eventbus.MaxAtomicBatch {
		if _, err := gc.Append(ctx, envs[i:min(i+eventbus.MaxAtomicBatch, len(envs))]); err != nil {
			b.Fatal(err)
		}
	}
	gc.Close()
	noop := benchNoopConsume(b, bus)

	b.ResetTimer()
	d := lc.run(b)
	b.StopTimer()
	eps := float64(b.N) / d.Seconds()
	b.ReportMetric(eps, "events/s")
	b.ReportMetric(raw, "raw-events/s")
	b.ReportMetric(eps/raw, "x-raw")
	b.ReportMetric(noop, "noop-events/s")
	b.ReportMetric(eps/noop, "x-noop")
}

type benchLifecycle struct {
	bus   *eventbus.Bus
	pool  *pgxpool.Pool
	relay *outbox.Relay
	cons  *consumer.Consumer
	pc    *partition.Consumer
}

// newBenchLifecycle wires lifecycle's consumer and relay as Run does and
// prepares the consumer.
func newBenchLifecycle(b *testing.B, bus *eventbus.Bus, pool *pgxpool.Pool) *benchLifecycle {
	ctx := context.Background()
	kv, err := convview.Ensure(ctx, bus, 0, 1)
	if err != nil {
		b.Fatal(err)
	}
	st := store.New(pool, 24*time.Hour)
	relay := outbox.New(outbox.Config{Store: st, Bus: bus, View: convview.NewWriter(kv), DuplicateWindow: 2 * time.Minute, ViewTTL: convview.DefaultTTL})
	cons := consumer.New(consumer.Config{Store: st, Bus: bus, Relay: relay, Pool: pool, BatchSize: 500})
	if err := cons.Prepare(ctx); err != nil {
		b.Fatal(err)
	}
	if err := partition.Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	pc := partition.NewConsumer(partition.Config{Bus: bus, Pool: pool, BatchSize: 500,
		Coordinator: partition.NewCoordinator(pool, consumer.Durable, "bench", 0, 0)})
	return &benchLifecycle{bus: bus, pool: pool, relay: relay, cons: cons, pc: pc}
}

// run consumes from the start of the stream until quiet and returns how
// long that took.
func (l *benchLifecycle) run(b *testing.B) time.Duration {
	b.StopTimer()
	ctx := context.Background()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	b.StartTimer()
	start := time.Now()
	go func() { _ = l.pc.Run(cctx, l.cons.Handle); done <- struct{}{} }()
	go func() { _ = l.relay.Run(cctx, time.Second); done <- struct{}{} }()
	for !benchQuiet(ctx, l.bus, l.pool) {
		time.Sleep(2 * time.Millisecond)
	}
	d := time.Since(start)
	b.StopTimer()
	cancel()
	<-done
	<-done
	var ended int64
	if err := l.pool.QueryRow(ctx, `SELECT count(*) FROM lifecycle_conversations WHERE status = 'ended'`).Scan(&ended); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d events in %v; %d conversations ended", b.N, d, ended)
	return d
}

// benchQuiet: everything in the stream is applied and acknowledged and the
// outbox is empty.
func benchQuiet(ctx context.Context, bus *eventbus.Bus, pool *pgxpool.Pool) bool {
	var outboxRows int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM lifecycle_outbox`).Scan(&outboxRows); err != nil {
		return false
	}
	last, err := bus.LastSequence(ctx)
	return err == nil && outboxRows == 0 && minPosition(ctx, pool) >= last
}

// benchRawPublish publishes envs one message at a time, pipelined, to a
// stream of their own and returns the rate.
func benchRawPublish(b *testing.B, bus *eventbus.Bus, envs []*eventv1.Envelope) float64 {
	ctx := context.Background()
	js := bus.JetStream()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH_RAW", Subjects: []string{"bench.raw.>"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	msgs := make([]*nats.Msg, len(envs))
	for i, env := range envs {
		data, err := proto.Marshal(env)
		if err != nil {
			b.Fatal(err)
		}
		m := nats.NewMsg("bench.raw." + env.GetTenantId() + "." + env.GetConversationId())
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, eventbus.MsgID(env.GetTenantId(), env.GetEventId()))
		msgs[i] = m
	}
	start := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, len(msgs))
	waited := 0
	wait := func(upTo int) {
		for ; waited < upTo; waited++ {
			select {
			case <-futures[waited].Ok():
			case err := <-futures[waited].Err():
				b.Fatal(err)
			}
		}
	}
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
		wait(len(futures) - 1000) // at most 1000 in flight
	}
	wait(len(futures))
	d := time.Since(start)
	if err := js.DeleteStream(ctx, "BENCH_RAW"); err != nil {
		b.Fatal(err)
	}
	return float64(len(msgs)) / d.Seconds()
}

// benchNoopConsume runs a durable consumer that acknowledges every event of
// the stream without doing anything and returns the rate.
func benchNoopConsume(b *testing.B, bus *eventbus.Bus) float64 {
	ctx := context.Background()
	last, err := bus.LastSequence(ctx)
	if err != nil {
		b.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	start := time.Now()
	go func() {
		_ = bus.Consume(cctx, eventbus.ConsumerConfig{Durable: "bench-noop", BatchSize: 500}, func(context.Context, []*eventbus.Delivery) error { return nil })
		close(done)
	}()
	for {
		if c, err := bus.JetStream().Consumer(ctx, eventbus.ConvStream, "bench-noop"); err == nil && c.CachedInfo().AckFloor.Stream >= last {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	d := time.Since(start)
	cancel()
	<-done
	if err := bus.JetStream().DeleteConsumer(ctx, eventbus.ConvStream, "bench-noop"); err != nil {
		b.Fatal(err)
	}
	return float64(last) / d.Seconds()
}

// benchEvents returns n events of interleaved conversations: 200 open at a
// time over five tenants, each about 15 events (start, bot and visitor
// messages, a flow, usage, sometimes a goal, sometimes a handoff to an agent),
// 70% closed, 5% of those followed by a late message.
func benchEvents(n int) []*eventv1.Envelope {
	rng := rand.New(rand.NewPCG(1, 2))
	const open = 200
	now := time.Now().UTC()
	convs := make([]*benchConv, 0, open)
	next := 0
	out := make([]*eventv1.Envelope, 0, n)
	for len(out) < n {
		for len(convs) < open {
			convs = append(convs, newBenchConv(rng, fmt.Sprintf("t%d", next%5), fmt.Sprintf("c%06d", next), now))
			next++
		}
		i := rng.IntN(len(convs))
		c := convs[i]
		out = append(out, c.events[0])
		c.events = c.events[1:]
		if len(c.events) == 0 {
			convs[i] = convs[len(convs)-1]
			convs = convs[:len(convs)-1]
		}
	}
	return out
}

type benchConv struct{ events []*eventv1.Envelope }

func newBenchConv(rng *rand.Rand, tenant, conv string, now time.Time) *benchConv {
	c := &benchConv{}
	at := now.Add(-time.Duration(rng.IntN(600)) * time.Second)
	add := func(payload any) {
		at = at.Add(time.Duration(1+rng.IntN(20)) * time.Second)
		c.events = append(c.events, benchEnvelope(tenant, conv, at, payload))
	}
	add(&eventv1.ConversationStarted{BotId: "support", Channel: eventv1.Channel(1 + rng.IntN(4)), Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE})
	add(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "Hi! How can I help you today?"})
	add(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "Where is my order 12345?", Intent: &eventv1.Intent{Name: "order_status", Confidence: 0.9}})
	add(&eventv1.FlowStarted{FlowId: "order_status"})
	add(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "Let me check that order for you.", ResponseTimeMs: 850})
	add(&eventv1.FlowStep{FlowId: "order_status", StepId: "lookup"})
	add(&eventv1.UsageRecorded{Model: "m", InputTokens: 900, OutputTokens: 120, CostMicros: 1800})
	for range rng.IntN(4) {
		add(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "and the delivery address?"})
		add(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "Sure, what is the new address?", ResponseTimeMs: 700})
	}
	if rng.IntN(10) < 6 {
		add(&eventv1.FlowCompleted{FlowId: "order_status"})
	}
	if rng.IntN(10) < 3 {
		add(&eventv1.GoalReached{GoalId: "order-status"})
	}
	if rng.IntN(10) < 2 {
		add(&eventv1.HandoffRequested{Reason: "asked"})
		add(&eventv1.AgentJoined{AgentId: "ann", AgentName: "Ann"})
		add(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, Text: "Ann here, how can I help?", AgentId: "ann"})
	}
	add(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "thanks, bye"})
	if rng.IntN(10) < 7 {
		add(&eventv1.ConversationClosed{ClosedBy: eventv1.Actor(1 + rng.IntN(3))})
		if rng.IntN(20) == 0 {
			add(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "one more thing"})
		}
	}
	return c
}

func benchEnvelope(tenant, conv string, at time.Time, payload any) *eventv1.Envelope {
	env := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: tenant, ConversationId: conv, OccurredAt: timestamppb.New(at)}
	switch p := payload.(type) {
	case *eventv1.FlowStarted:
		env.Payload = &eventv1.Envelope_FlowStarted{FlowStarted: p}
	case *eventv1.FlowStep:
		env.Payload = &eventv1.Envelope_FlowStep{FlowStep: p}
	case *eventv1.UsageRecorded:
		env.Payload = &eventv1.Envelope_UsageRecorded{UsageRecorded: p}
	default:
		return envelope(tenant, conv, at, payload)
	}
	return env
}
