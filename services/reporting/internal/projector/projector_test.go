package projector_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/reporting/internal/projector"
	"github.com/parley-dev/parley/services/reporting/internal/query"
	"github.com/parley-dev/parley/services/reporting/internal/schema"
	"github.com/parley-dev/parley/services/reporting/internal/statestore"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func env(tenant, conv string, at time.Time, role eventv1.Role, text string) *eventv1.Envelope {
	return &eventv1.Envelope{
		EventId: eventbus.NewEventID(), TenantId: tenant, ConversationId: conv, Kind: "message_posted",
		OccurredAt: timestamppb.New(at), RecordedAt: timestamppb.New(at), Producer: "ingest",
		Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: role, Text: text}},
	}
}

// TestProjectionIsIdempotentAndTenantScoped projects events through the real
// consumer from a real JetStream into a real ClickHouse, then replays the
// whole stream into the same tables and checks nothing changed.
func TestProjectionIsIdempotentAndTenantScoped(t *testing.T) {
	ctx := context.Background()
	tel := testenv.Telemetry(t, "reporting-test")
	n := testenv.NATS(t)
	db := testenv.ClickHouse(t)
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: db.Addr, Database: db.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := schema.Migrate(ctx, ch, tel.Logger); err != nil {
		t.Fatal(err)
	}
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := statestore.Migrate(ctx, pool, tel.Logger); err != nil {
		t.Fatal(err)
	}
	states := statestore.New(pool)
	bus, err := eventbus.Connect(ctx, n.URL, "test", eventbus.Options{Producer: "test", Logger: tel.Logger})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	var published []*eventv1.Envelope
	for i := range 30 {
		role := eventv1.Role_ROLE_VISITOR
		if i%2 == 1 {
			role = eventv1.Role_ROLE_BOT
		}
		published = append(published, env("acme", "c1", base.Add(time.Duration(i)*time.Millisecond*1500), role, "msg"))
	}
	published = append(published, env("other", "c1", base, eventv1.Role_ROLE_VISITOR, "someone else's"))
	for _, e := range published {
		if _, err := bus.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}

	project := func(durable string) {
		t.Helper()
		p := projector.New(ch, states, projector.LiveTables, tel.Logger)
		cctx, cancel := context.WithCancel(ctx)
		seen := 0
		done := make(chan error, 1)
		go func() {
			done <- bus.Consume(cctx, eventbus.ConsumerConfig{Durable: durable, BatchSize: 7, MaxWait: 50 * time.Millisecond},
				func(ctx context.Context, b []*eventbus.Delivery) error {
					err := p.Handle(ctx, b)
					if seen += len(b); seen >= len(published) {
						cancel()
					}
					return err
				})
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("projection did not finish")
		}
	}
	project("projector-a")
	r := query.NewReader(ch, 10*time.Second)
	first, err := r.Transcript(ctx, "acme", "c1", 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Messages) != 30 || first.EventCount != 30 {
		t.Fatalf("got %d messages, %d events; want 30", len(first.Messages), first.EventCount)
	}
	for i, m := range first.Messages {
		if m.EventID != published[i].EventId || !m.OccurredAt.Equal(published[i].OccurredAt.AsTime()) {
			t.Fatalf("message %d out of order or wrong time: %+v", i, m)
		}
	}
	convRow := func() string {
		var row string
		if err := ch.QueryRow(ctx, `SELECT concat(toString(count()), '|', toString(sum(message_count)), '|', toString(sum(visitor_messages)), '|', toString(max(version)), '|', toString(min(started_at_us)))
			FROM conversations FINAL WHERE tenant_id = 'acme'`).Scan(&row); err != nil {
			t.Fatal(err)
		}
		return row
	}
	want := fmt.Sprintf("1|30|15|30|%d", base.UnixMicro())
	if got := convRow(); got != want {
		t.Fatalf("conversations row: got %s, want %s", got, want)
	}
	// Replay the whole stream with a fresh consumer: same results.
	project("projector-replay")
	// And a replay from scratch (fold state lost, as in a rebuild): same.
	if _, err := pool.Exec(ctx, "TRUNCATE reporting_conversation_state"); err != nil {
		t.Fatal(err)
	}
	project("projector-rebuild")
	if got := convRow(); got != want {
		t.Fatalf("conversations row after replays: got %s, want %s", got, want)
	}
	again, err := r.Transcript(ctx, "acme", "c1", 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(first, again) {
		t.Fatalf("replay changed the projection:\n%+v\n%+v", first, again)
	}
	other, err := r.Transcript(ctx, "other", "c1", 1000, nil)
	if err != nil || len(other.Messages) != 1 || other.Messages[0].Text != "someone else's" {
		t.Fatalf("tenant scoping: %+v %v", other, err)
	}
	if _, err := r.Transcript(ctx, "nobody", "c1", 1000, nil); err != query.ErrNotFound {
		t.Fatalf("unknown tenant: want ErrNotFound, got %v", err)
	}
}

// TestFailedBatchIsProjectedAgainInFull makes a batch fail after its events
// were folded (the conversations insert fails), then hands the same batch
// to the projector again, as the consumer's redelivery does: what the
// failed attempt folded in memory must not count as applied.
func TestFailedBatchIsProjectedAgainInFull(t *testing.T) {
	ctx := context.Background()
	tel := testenv.Telemetry(t, "reporting-test")
	db := testenv.ClickHouse(t)
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: db.Addr, Database: db.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := schema.Migrate(ctx, ch, tel.Logger); err != nil {
		t.Fatal(err)
	}
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := statestore.Migrate(ctx, pool, tel.Logger); err != nil {
		t.Fatal(err)
	}
	states := statestore.New(pool)
	p := projector.New(ch, states, projector.LiveTables, tel.Logger)
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	var seq uint64
	batch := func(n int) []*eventbus.Delivery {
		var out []*eventbus.Delivery
		for range n {
			seq++
			out = append(out, &eventbus.Delivery{Envelope: env("acme", "c1", base.Add(time.Duration(seq)*time.Second), eventv1.Role_ROLE_VISITOR, "msg"), StreamSeq: seq})
		}
		return out
	}
	if err := p.Handle(ctx, batch(3)); err != nil {
		t.Fatal(err)
	}
	second := batch(4)
	// The conversations table is briefly missing: the batch fails after
	// the events were folded into the (remembered) state.
	if err := ch.Exec(ctx, `RENAME TABLE conversations TO conversations_away`); err != nil {
		t.Fatal(err)
	}
	if err := p.Handle(ctx, second); err == nil {
		t.Fatal("batch without a conversations table succeeded")
	}
	if err := ch.Exec(ctx, `RENAME TABLE conversations_away TO conversations`); err != nil {
		t.Fatal(err)
	}
	if err := p.Handle(ctx, second); err != nil {
		t.Fatal(err)
	}
	var count, version uint64
	if err := ch.QueryRow(ctx, `SELECT toUInt64(message_count), version FROM conversations FINAL WHERE tenant_id = 'acme' AND conversation_id = 'c1'`).Scan(&count, &version); err != nil {
		t.Fatal(err)
	}
	if count != 7 || version != 7 {
		t.Fatalf("after the redelivered batch: %d messages, version %d; want 7, 7", count, version)
	}
}
