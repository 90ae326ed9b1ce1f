package reporting_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/partition/partitiontest"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/libs/testsvc"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// counts is what the test expects of, or reads from, one conversation's
// projection.
type counts struct{ events, messages, convMessages, convEvents uint64 }

// publishConv publishes a conversation_started and n visitor messages of
// acme's conversation id and returns their envelopes.
func (f *fixture) publishConv(t *testing.T, id string, n int) []*eventv1.Envelope {
	t.Helper()
	at := f.now.Add(-time.Hour)
	out := []*eventv1.Envelope{{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: id, OccurredAt: timestamppb.New(at), Producer: "ingest",
		Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{BotId: "b", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET}}}}
	for i := range n {
		out = append(out, &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: id,
			OccurredAt: timestamppb.New(at.Add(time.Duration(i+1) * time.Second)), Producer: "ingest",
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: fmt.Sprintf("message %d", i)}}})
	}
	for _, e := range out {
		f.publishEnv(t, e)
	}
	return out
}

func (f *fixture) publishEnv(t *testing.T, e *eventv1.Envelope) {
	t.Helper()
	if _, err := f.bus.Publish(context.Background(), e); err != nil {
		t.Fatal(err)
	}
}

// projected reads every acme conversation's counts from ClickHouse, exact
// before merges (FINAL, distinct event ids).
func (f *fixture) projected(t *testing.T) map[string]counts {
	t.Helper()
	ctx := context.Background()
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: f.ch.Addr, Database: f.ch.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	out := map[string]counts{}
	read := func(q string, set func(c *counts, n uint64)) {
		rows, err := ch.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var n uint64
			if err := rows.Scan(&id, &n); err != nil {
				t.Fatal(err)
			}
			c := out[id]
			set(&c, n)
			out[id] = c
		}
	}
	read(`SELECT conversation_id, toUInt64(uniqExact(event_id)) FROM events WHERE tenant_id = 'acme' GROUP BY conversation_id`, func(c *counts, n uint64) { c.events = n })
	read(`SELECT conversation_id, toUInt64(uniqExact(event_id)) FROM messages WHERE tenant_id = 'acme' GROUP BY conversation_id`, func(c *counts, n uint64) { c.messages = n })
	read(`SELECT conversation_id, toUInt64(message_count) FROM conversations FINAL WHERE tenant_id = 'acme'`, func(c *counts, n uint64) { c.convMessages = n })
	read(`SELECT conversation_id, toUInt64(event_count) FROM conversations FINAL WHERE tenant_id = 'acme'`, func(c *counts, n uint64) { c.convEvents = n })
	return out
}

// expectCounts checks the projection of every conversation in want (id ->
// messages published after its start).
func (f *fixture) expectCounts(t *testing.T, want map[string]int) {
	t.Helper()
	got := f.projected(t)
	for id, n := range want {
		w := counts{events: uint64(n + 1), messages: uint64(n), convMessages: uint64(n), convEvents: uint64(n + 1)}
		if got[id] != w {
			t.Fatalf("%s: projected %+v, want %+v", id, got[id], w)
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A transient failure of one event while later events of its conversation
// are in the log: the old durable consumer acknowledged the later ones and
// skipped the redelivered event as late (the conversation's fold missed a
// message); the partitioned projector pauses and resumes from its stored
// position, so every event is projected, in order.
func TestTransientFailureSkipsNothing(t *testing.T) {
	var victim atomic.Value
	victim.Store("")
	var failed atomic.Int32
	f := startEmptyWith(t, func(c *reporting.Config) {
		c.Wrap = partitiontest.FailOn(func() string { return victim.Load().(string) }, errors.New("connection reset by peer"), partitiontest.FailFor(500*time.Millisecond, &failed))
	})
	f.publishConv(t, "t00", 0)
	v := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: "t00", OccurredAt: timestamppb.New(f.now.Add(-time.Hour + time.Second)),
		Producer: "ingest", Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "victim"}}}
	victim.Store(v.GetEventId())
	f.publishEnv(t, v)
	for i := range 4 {
		f.publishEnv(t, &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: "t00",
			OccurredAt: timestamppb.New(f.now.Add(-time.Hour + time.Duration(i+2)*time.Second)), Producer: "ingest",
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: fmt.Sprintf("after %d", i)}}})
	}
	want := map[string]int{"t00": 5}
	for i := 1; i < 10; i++ {
		id := fmt.Sprintf("t%02d", i)
		f.publishConv(t, id, 5)
		want[id] = 5
	}
	f.waitProjected(t)
	if failed.Load() < 1 {
		t.Fatal("the fault was not injected")
	}
	f.expectCounts(t, want)
	if d := partitiontest.DeadLetters(t, f.bus.JetStream(), ""); len(d) != 0 {
		t.Fatalf("dead letters: %v", d)
	}
}

// One event refused permanently: it is dead-lettered with its reason, the
// later events of its conversation are held (dead-lettered as held, not
// projected), other conversations are projected exactly.
func TestPermanentFailureHoldsTheConversation(t *testing.T) {
	poison := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: "p00", Producer: "ingest",
		Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "poison"}}}
	f := startEmptyWith(t, func(c *reporting.Config) {
		c.Wrap = func(h partition.Handler) partition.Handler {
			return func(ctx context.Context, b partition.Batch) error {
				for _, d := range b.Deliveries {
					if d.Envelope.GetEventId() == poison.GetEventId() {
						return eventbus.Permanent(errors.New("refused: test poison"))
					}
				}
				return h(ctx, b)
			}
		}
	})
	poison.OccurredAt = timestamppb.New(f.now.Add(-time.Hour + 2*time.Second))
	f.publishConv(t, "p00", 1)
	f.publishEnv(t, poison)
	after := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: "p00", OccurredAt: timestamppb.New(f.now.Add(-time.Hour + 3*time.Second)),
		Producer: "ingest", Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "after"}}}
	f.publishEnv(t, after)
	want := map[string]int{}
	for i := 1; i < 10; i++ {
		id := fmt.Sprintf("p%02d", i)
		f.publishConv(t, id, 3)
		want[id] = 3
	}
	f.waitProjected(t)
	d := partitiontest.DeadLetters(t, f.bus.JetStream(), "")
	if len(d) != 2 || d[poison.GetEventId()] != "refused: test poison" || d[after.GetEventId()] == "" {
		t.Fatalf("dead letters: %v", d)
	}
	// The held conversation keeps what came before the poison.
	want["p00"] = 1
	f.expectCounts(t, want)
	pool, err := pgstore.Connect(context.Background(), config.Postgres{URL: f.pgURL, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	held, err := partition.Held(context.Background(), pool, "reporting-projector")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := held[partition.Conversation{TenantID: "acme", ConversationID: "p00"}]; !ok || len(held) != 1 {
		t.Fatalf("held: %v", held)
	}
}

// ClickHouse unreachable for a while: the projector pauses (not ready),
// nothing is dead-lettered, and once ClickHouse returns every event is
// projected exactly.
func TestClickHouseOutagePauses(t *testing.T) {
	var proxy *testsvc.FlakyProxy
	f := startEmptyWith(t, func(c *reporting.Config) {
		proxy = testsvc.StartFlakyProxy(t, c.ClickHouse.Addr)
		c.ClickHouse.Addr = proxy.Addr()
	})
	want := map[string]int{}
	for i := range 5 {
		id := fmt.Sprintf("o%02d", i)
		f.publishConv(t, id, 3)
		want[id] = 3
	}
	f.waitProjected(t)
	proxy.SetDown(true)
	for i := 5; i < 15; i++ {
		id := fmt.Sprintf("o%02d", i)
		f.publishConv(t, id, 3)
		want[id] = 3
	}
	// Later events of conversations projected before the outage.
	for i := range 5 {
		id := fmt.Sprintf("o%02d", i)
		f.publishEnv(t, &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: id,
			OccurredAt: timestamppb.New(f.now.Add(-time.Hour + 10*time.Second)), Producer: "ingest",
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "during the outage"}}})
		want[id] = 4
	}
	waitUntil(t, "the projector's readiness check to fail", func() bool { return !testsvc.CheckReady(f.cfg.AdminAddr, "projector") })
	time.Sleep(3 * time.Second) // the outage lasts
	proxy.SetDown(false)
	waitUntil(t, "readiness back", func() bool { return testsvc.CheckReady(f.cfg.AdminAddr, "projector") })
	f.waitProjected(t)
	f.expectCounts(t, want)
	if d := partitiontest.DeadLetters(t, f.bus.JetStream(), ""); len(d) != 0 {
		t.Fatalf("dead letters: %v", d)
	}
}

// replica is a second reporting process on the fixture's stores.
type replica struct {
	client reportingv1.ReportingServiceClient
	stop   func()
}

func (f *fixture) replica(t *testing.T, name string, mutate func(*reporting.Config)) *replica {
	t.Helper()
	cfg := f.cfg
	cfg.GRPCAddr, cfg.AdminAddr = testsvc.Addrs(t)
	hport, _ := localinfra.FreePort()
	cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", hport)
	cfg.Telemetry = testenv.Telemetry(t, name)
	cfg.Wrap, cfg.KeepLeases = nil, false
	if mutate != nil {
		mutate(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reporting.Run(ctx, cfg) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", name, err)
			}
		})
	}
	t.Cleanup(stop)
	return &replica{client: reportingv1.NewReportingServiceClient(testsvc.Dial(t, cfg.GRPCAddr)), stop: stop}
}

// owners counts the live partition leases of each member.
func (f *fixture) owners(t *testing.T) map[string]int {
	t.Helper()
	pool, err := pgstore.Connect(context.Background(), config.Postgres{URL: f.pgURL, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	return partitiontest.Owners(t, pool, "reporting-projector")
}

// Two replicas divide the partitions and both project; one dies without
// releasing its leases and its partitions move to the survivor within
// seconds; every conversation is projected exactly.
func TestTwoReplicasDividePartitions(t *testing.T) {
	const ttl = 2 * time.Second
	f := startEmptyWith(t, func(c *reporting.Config) { c.Member, c.LeaseTTL = "b", ttl })
	a := f.replica(t, "reporting-a", func(c *reporting.Config) { c.Member, c.LeaseTTL, c.KeepLeases = "a", ttl, true })
	half := partition.DefaultPartitions / 2
	waitUntil(t, "both replicas hold partitions", func() bool {
		o := f.owners(t)
		return o["a"] == half && o["b"] == half
	})
	want := map[string]int{}
	for i := range 20 {
		id := fmt.Sprintf("r%02d", i)
		f.publishConv(t, id, 4)
		want[id] = 4
	}
	f.waitProjected(t)
	a.stop() // leases kept, as by a crash
	killed := time.Now()
	for i := 20; i < 40; i++ {
		id := fmt.Sprintf("r%02d", i)
		f.publishConv(t, id, 4)
		want[id] = 4
	}
	waitUntil(t, "the survivor holds every partition", func() bool { return f.owners(t)["b"] == partition.DefaultPartitions })
	if d := time.Since(killed); d > 4*ttl {
		t.Fatalf("takeover took %v", d)
	}
	f.waitProjected(t)
	f.expectCounts(t, want)
	if d := partitiontest.DeadLetters(t, f.bus.JetStream(), ""); len(d) != 0 {
		t.Fatalf("dead letters: %v", d)
	}
}

// Two replicas project; a rebuild asked of either one (here the second)
// holds every replica's commits only while it catches up and swaps; with
// traffic before, during and after it, every conversation is projected
// exactly in the swapped-in tables.
func TestRebuildWithTwoReplicas(t *testing.T) {
	f := startEmpty(t)
	second := f.replica(t, "reporting-2", nil)
	waitUntil(t, "both replicas hold partitions", func() bool { return len(f.owners(t)) == 2 })
	want := map[string]int{}
	for i := range 30 {
		id := fmt.Sprintf("b%02d", i)
		f.publishConv(t, id, 3)
		want[id] = 3
	}
	f.waitProjected(t)
	op := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", f.opKey)
	stream, err := second.client.RebuildProjections(op, &reportingv1.RebuildProjectionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	// Traffic during the rebuild, to conversations old and new.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var pubErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		publish := func(id string, set func(*eventv1.Envelope)) error {
			e := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: id,
				OccurredAt: timestamppb.New(f.now.Add(-time.Hour + time.Minute)), Producer: "ingest"}
			set(e)
			_, err := f.bus.Publish(context.Background(), e)
			return err
		}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := fmt.Sprintf("b%02d", i%40)
			if _, ok := want[id]; !ok {
				if pubErr = publish(id, func(e *eventv1.Envelope) {
					e.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{BotId: "b"}}
				}); pubErr != nil {
					return
				}
				want[id] = 0
			}
			if pubErr = publish(id, func(e *eventv1.Envelope) {
				e.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "during"}}
			}); pubErr != nil {
				return
			}
			want[id]++
			time.Sleep(5 * time.Millisecond)
		}
	}()
	progress, err := drain(stream)
	time.Sleep(300 * time.Millisecond) // traffic after the swap too
	close(stop)
	wg.Wait()
	if pubErr != nil {
		t.Fatal(pubErr)
	}
	if err != nil || len(progress) == 0 || progress[len(progress)-1].GetPhase() != "done" {
		t.Fatalf("rebuild on the second replica: %v %v", progress, err)
	}
	f.waitProjected(t)
	f.expectCounts(t, want)
	if got := f.projected(t); len(got) != len(want) {
		t.Fatalf("%d conversations projected, want %d", len(got), len(want))
	}
	if _, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: allTime(&reportingv1.Filter{})}); err != nil {
		t.Fatal(err)
	}
}
