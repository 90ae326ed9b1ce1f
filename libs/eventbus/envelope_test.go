package eventbus_test

import (
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestNewEnvelopeFillsPayloadKindAndOptions(t *testing.T) {
	at := time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)
	env := eventbus.NewEnvelope("acme", "c1", &eventv1.Flagged{Note: "r"},
		eventbus.OccurredAt(at), eventbus.Producer("tagging"), eventbus.CausedBy("cause-1", ""))
	want := &eventv1.Envelope{
		EventId: env.GetEventId(), TenantId: "acme", ConversationId: "c1", Kind: "flagged",
		OccurredAt: timestamppb.New(at), Producer: "tagging", CausationId: "cause-1", CorrelationId: "cause-1",
		Payload: &eventv1.Envelope_Flagged{Flagged: &eventv1.Flagged{Note: "r"}},
	}
	if !proto.Equal(env, want) {
		t.Fatalf("got %v\nwant %v", env, want)
	}
	if env.GetEventId() == "" || eventbus.NewEnvelope("acme", "c1", &eventv1.Flagged{}).GetEventId() == env.GetEventId() {
		t.Fatal("event ids not new")
	}
	if got := eventbus.NewEnvelope("acme", "c1", &eventv1.Flagged{}, eventbus.WithEventID("x")); got.GetEventId() != "x" || got.GetCorrelationId() != "x" {
		t.Fatalf("event id %q correlation %q, want x and x (its own)", got.GetEventId(), got.GetCorrelationId())
	}
}

func TestDeriveFollowsTheCause(t *testing.T) {
	cause := &eventv1.Envelope{
		EventId: "e1", TenantId: "acme", ConversationId: "c1", CorrelationId: "corr",
		OccurredAt: timestamppb.New(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC)),
		Payload:    &eventv1.Envelope_ConversationClosed{ConversationClosed: &eventv1.ConversationClosed{}},
	}
	env := eventbus.Derive(cause, &eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_VISITOR_CLOSED})
	want := &eventv1.Envelope{
		EventId: eventbus.DerivedEventID("acme", "e1", "conversation_ended"), TenantId: "acme", ConversationId: "c1",
		Kind: "conversation_ended", OccurredAt: cause.OccurredAt, CausationId: "e1", CorrelationId: "corr",
		Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_VISITOR_CLOSED}},
	}
	if !proto.Equal(env, want) {
		t.Fatalf("got %v\nwant %v", env, want)
	}
	cause.CorrelationId = ""
	if got := eventbus.Derive(cause, &eventv1.Flagged{}).GetCorrelationId(); got != "e1" {
		t.Fatalf("correlation %q, want the cause's id", got)
	}
}

func TestNewEnvelopeRefusesANonPayload(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a message that is not a payload")
		}
	}()
	eventbus.NewEnvelope("acme", "c1", &eventv1.Envelope{})
}

func TestNewEnvelopeRequestAndClientEventID(t *testing.T) {
	at := timestamppb.New(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))
	req := eventbus.NewEnvelope("", "c1", &eventv1.MessagePosted{Text: "hi"}, eventbus.OccurredAtTimestamp(at), eventbus.WithClientEventID("m1"))
	want := &eventv1.Envelope{ConversationId: "c1", Kind: "message_posted", OccurredAt: at, ClientEventId: "m1",
		Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Text: "hi"}}}
	if !proto.Equal(req, want) {
		t.Fatalf("request envelope %v\nwant %v (ingest assigns tenant and ids)", req, want)
	}
	if got := eventbus.NewEnvelope("", "c1", &eventv1.MessagePosted{}, eventbus.OccurredAtTimestamp(nil)); got.OccurredAt != nil {
		t.Fatal("nil occurred_at set")
	}
	env := eventbus.NewEnvelope("acme", "c1", &eventv1.MessagePosted{}, eventbus.WithClientEventID("m1"))
	if id := eventbus.ClientEventID("acme", "c1", "m1"); env.GetEventId() != id || env.GetCorrelationId() != id {
		t.Fatalf("event id %q correlation %q, want both %q", env.GetEventId(), env.GetCorrelationId(), id)
	}
}
