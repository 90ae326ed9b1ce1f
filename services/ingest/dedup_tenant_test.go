package ingest_test

import (
	"context"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest"
	"google.golang.org/grpc/metadata"
)

// TestDeduplicationIsPerTenant replays the cross-tenant exploit: tenant acme
// appends an event whose id is the one ingest derives for tenant victim's
// client_event_id "m1" on conversation "b-victim" (the derivation is public).
// victim's PostMessage must still store victim's event, on victim's subject,
// instead of answering "duplicate" with acme's sequence.
func TestDeduplicationIsPerTenant(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	if err := f.store.CreateTenant(ctx, "victim", ""); err != nil {
		t.Fatal(err)
	}
	victimKey, _, err := f.store.CreateAPIKey(ctx, "victim", "test", []string{grpcx.ScopeIngest})
	if err != nil {
		t.Fatal(err)
	}
	victim := metadata.AppendToOutgoingContext(ctx, "x-api-key", victimKey)

	// The id ingest gives victim's message, computed here from the published
	// derivation: UUIDv5 in Parley's namespace of
	// "client/<tenant>/<conversation>/<client_event_id>".
	ns := uuid.MustParse("6f1c1d2e-8a51-4c6b-9a7e-3c1f0b9f2a10")
	stolen := uuid.NewSHA1(ns, []byte("client/victim/b-victim/m1")).String()
	if stolen != eventbus.ClientEventID("victim", "b-victim", "m1") {
		t.Fatalf("derivation changed: %s", eventbus.ClientEventID("victim", "b-victim", "m1"))
	}
	attack := visitor("a-conv", "squatting")
	attack.EventId = stolen
	res, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{attack}})
	if err != nil {
		t.Fatal(err)
	}
	attackSeq := res.Results[0].StreamSequence

	got, err := f.client.PostMessage(victim, &ingestv1.PostMessageRequest{
		ConversationId: "b-victim", ClientEventId: "m1",
		Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hello"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Duplicate || got.StreamSequence == attackSeq || got.EventId != stolen {
		t.Fatalf("victim's message: %+v; want a new event %s, not a duplicate of acme's sequence %d", got, stolen, attackSeq)
	}
	// A genuine retry by victim is still a duplicate of victim's event.
	again, err := f.client.PostMessage(victim, &ingestv1.PostMessageRequest{
		ConversationId: "b-victim", ClientEventId: "m1",
		Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hello"},
	})
	if err != nil || !again.Duplicate || again.StreamSequence != got.StreamSequence {
		t.Fatalf("victim's retry: %+v %v; want duplicate of %d", again, err, got.StreamSequence)
	}

	envs := f.stored(t) // also checks subjects and Nats-Msg-Id of every event
	if len(envs) != 2 {
		t.Fatalf("stream holds %d events, want acme's and victim's", len(envs))
	}
	v := envs[1]
	if v.TenantId != "victim" || v.ConversationId != "b-victim" || v.EventId != stolen || v.GetMessagePosted().GetText() != "hello" {
		t.Fatalf("victim's event in the stream: %v", v)
	}
}

// TestEventOverMaxPayloadIsInvalidArgument sends, within ingest's own
// limits, an event larger than the event log's max_payload: the request is
// refused with InvalidArgument naming that event, nothing stored.
func TestEventOverMaxPayloadIsInvalidArgument(t *testing.T) {
	f := start(t, func(c *ingest.Config) { c.MaxTextBytes, c.MaxRequestBytes = 12<<20, 16<<20 })
	nc, err := nats.Connect(f.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	maxPayload := int(nc.MaxPayload())
	nc.Close()
	// Ingest's request limit follows max_payload, so the request itself fits;
	// what ingest and the event log add (ids, times, producer, headers)
	// takes the stored message over max_payload.
	big := visitor("c1", strings.Repeat("x", maxPayload-150))
	_, err = f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{visitor("c1", "hello"), big}})
	assertField(t, err, "events[1]")
	if n := f.streamMsgs(t); n != 0 {
		t.Fatalf("stream holds %d events, want none", n)
	}
}
