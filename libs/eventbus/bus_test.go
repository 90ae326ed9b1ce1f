package eventbus_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func newBus(t *testing.T, url string) *eventbus.Bus {
	t.Helper()
	tel := testenv.Telemetry(t, "eventbus-test")
	b, err := eventbus.Connect(context.Background(), url, "test", eventbus.Options{
		Producer: "test", Logger: tel.Logger, TracerProvider: tel.TracerProvider, Propagator: propagation.TraceContext{},
		PublishTimeout: 2 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.EnsureStreams(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b
}

func message(conv, id, text string) *eventv1.Envelope {
	return &eventv1.Envelope{
		EventId: id, TenantId: "acme", ConversationId: conv, OccurredAt: timestamppb.Now(),
		Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text}},
	}
}

func TestPublishDeduplicatesByEventID(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	ctx := context.Background()
	id := eventbus.NewEventID()
	first, err := b.Publish(ctx, message("c1", id, "hello"))
	if err != nil || first.Duplicate {
		t.Fatalf("first publish: %v %v", first, err)
	}
	again, err := b.Publish(ctx, message("c1", id, "hello"))
	if err != nil || !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("retry: want duplicate of seq %d, got %v %v", first.Sequence, again, err)
	}
	info, err := b.JetStream().Stream(ctx, eventbus.ConvStream)
	if err != nil {
		t.Fatal(err)
	}
	if got := info.CachedInfo().State.Msgs; got != 1 {
		t.Fatalf("stream holds %d messages, want 1", got)
	}
	// Subject and headers follow the contract.
	raw, err := info.GetMsg(ctx, first.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if raw.Subject != "parley.conv.v1.acme.c1.message_posted" || raw.Header.Get(jetstream.MsgIDHeader) != "acme/"+id || raw.Header.Get(eventbus.HeaderKind) != "message_posted" {
		t.Fatalf("unexpected subject/headers: %s %v", raw.Subject, raw.Header)
	}
}

func TestPublishRejectsInvalidEnvelope(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	bad := message("has.dot", eventbus.NewEventID(), "x")
	if _, err := b.Publish(context.Background(), bad); err == nil {
		t.Fatal("want error for a conversation id with a dot")
	}
	if _, err := b.Publish(context.Background(), &eventv1.Envelope{EventId: "x", TenantId: "a", ConversationId: "c"}); !errors.Is(err, eventbus.ErrNoPayload) {
		t.Fatalf("want ErrNoPayload, got %v", err)
	}
}

func TestConsumeBatchesAcksAndPropagatesTrace(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	tp := sdktrace.NewTracerProvider()
	ctx, span := tp.Tracer("test").Start(context.Background(), "client-request")
	const total = 50
	for range total {
		if _, err := b.Publish(ctx, message("c1", eventbus.NewEventID(), "m")); err != nil {
			t.Fatal(err)
		}
	}
	span.End()

	var mu sync.Mutex
	var got []*eventbus.Delivery
	batches := 0
	cctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(cctx, eventbus.ConsumerConfig{Durable: "t1", BatchSize: 20, MaxWait: 100 * time.Millisecond}, func(_ context.Context, batch []*eventbus.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			batches++
			got = append(got, batch...)
			if len(got) >= total {
				cancel()
			}
			return nil
		})
	}()
	waitDone(t, done)
	if len(got) != total || batches < 3 {
		t.Fatalf("got %d events in %d batches, want %d in >= 3", len(got), batches, total)
	}
	for _, d := range got {
		if d.SpanContext.TraceID() != span.SpanContext().TraceID() {
			t.Fatalf("trace id not propagated: %s vs %s", d.SpanContext.TraceID(), span.SpanContext().TraceID())
		}
	}
	assertPending(t, b, "t1", 0)
}

func TestFailingEventIsRetriedThenDeadLettered(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	ctx := context.Background()
	poisonID := eventbus.NewEventID()
	for _, id := range []string{eventbus.NewEventID(), poisonID, eventbus.NewEventID()} {
		if _, err := b.Publish(ctx, message("c1", id, "m")); err != nil {
			t.Fatal(err)
		}
	}
	// A message that is not an envelope at all is dead-lettered at once.
	if _, err := b.JetStream().Publish(ctx, "parley.conv.v1.acme.c2.message_posted", []byte("not protobuf \xff\xff")); err != nil {
		t.Fatal(err)
	}

	var okCount, poisonAttempts atomic.Int64
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(cctx, eventbus.ConsumerConfig{Durable: "t2", BatchSize: 10, MaxWait: 50 * time.Millisecond, MaxDeliver: 3,
			Backoff: []time.Duration{10 * time.Millisecond}}, func(_ context.Context, batch []*eventbus.Delivery) error {
			for _, d := range batch {
				if d.Envelope.EventId == poisonID {
					poisonAttempts.Add(1)
					return errors.New("cannot apply this one")
				}
			}
			okCount.Add(int64(len(batch)))
			return nil
		})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for dlqCount(t, b) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	waitDone(t, done)
	if got := dlqCount(t, b); got != 2 {
		t.Fatalf("dead letters: got %d, want 2 (the failing event and the undecodable one)", got)
	}
	if okCount.Load() < 2 {
		t.Fatalf("healthy events applied %d times, want >= 2: one bad event must not hold back the others", okCount.Load())
	}
	assertPending(t, b, "t2", 0)
	// The dead letter carries where it came from and why.
	s, _ := b.JetStream().Stream(ctx, eventbus.DLQStream)
	m, err := s.GetLastMsgForSubject(ctx, "parley.dlq.t2")
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(eventbus.HeaderDLQConsumer) != "t2" || m.Header.Get(eventbus.HeaderDLQError) == "" || m.Header.Get(eventbus.HeaderDLQSubject) == "" {
		t.Fatalf("dead letter headers: %v", m.Header)
	}
}

func TestPublishDuringOutageIsUnavailable(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	n.Shutdown()
	_, err := b.Publish(context.Background(), message("c1", eventbus.NewEventID(), "m"))
	if !errors.Is(err, eventbus.ErrUnavailable) {
		t.Fatalf("want ErrUnavailable while NATS is down, got %v", err)
	}
	n.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = b.Publish(context.Background(), message("c1", eventbus.NewEventID(), "m"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func dlqCount(t *testing.T, b *eventbus.Bus) uint64 {
	s, err := b.JetStream().Stream(context.Background(), eventbus.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

func assertPending(t *testing.T, b *eventbus.Bus, durable string, want uint64) {
	t.Helper()
	// The server applies acks asynchronously: poll briefly.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := b.JetStream().Consumer(context.Background(), eventbus.ConvStream, durable)
		if err != nil {
			t.Fatal(err)
		}
		info := c.CachedInfo()
		if info.NumPending == want && uint64(info.NumAckPending) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer %s: pending %d, ack pending %d; want %d", durable, info.NumPending, info.NumAckPending, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitDone(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("consumer did not stop")
	}
}
