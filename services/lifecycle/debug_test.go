package lifecycle_test

import (
	"context"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	lifecyclev1 "github.com/parley-dev/parley/proto/parley/lifecycle/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestDebugModeReadableByBots checks that a bot's ingest key reads the
// conversation's debug flag (conversation_started.debug_enabled; a later
// start turns it on, never off), that read keys see it in
// GetConversationState, and that publishable keys and bad ids are refused.
func TestDebugModeReadableByBots(t *testing.T) {
	w := newWorld(t, 0)
	s := w.start(w.pgURL, w.key, nil)
	keys := map[string]string{}
	func() {
		pool, err := pgstore.Connect(context.Background(), config.Postgres{URL: w.pgURL})
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		ts := tenancy.NewStore(pool)
		for name, spec := range map[string]tenancy.KeySpec{
			"ingest":      {TenantID: "acme", Name: "bot", Scopes: []string{grpcx.ScopeIngest}},
			"read":        {TenantID: "acme", Name: "console", Scopes: []string{grpcx.ScopeRead}},
			"publishable": {TenantID: "acme", Name: "widget", Kind: grpcx.KindPublishable, Scopes: []string{grpcx.ScopeIngest}, AllowedOrigins: []string{"https://shop.example"}},
		} {
			k, _, err := ts.CreateKey(context.Background(), spec)
			if err != nil {
				t.Fatalf("%s key: %v", name, err)
			}
			keys[name] = k
		}
	}()
	as := func(name string) context.Context {
		return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keys[name])
	}

	at := w.clock.Now()
	// d1 starts in debug mode and a second start without it keeps it on; d2
	// turns it on with its second start; d3 never has it.
	last := map[string]uint64{}
	for _, e := range []struct {
		conv string
		p    any
	}{
		{"d1", &eventv1.ConversationStarted{BotId: "b", DebugEnabled: true}},
		{"d1", &eventv1.ConversationStarted{BotId: "b"}},
		{"d2", &eventv1.ConversationStarted{BotId: "b"}},
		{"d2", &eventv1.ConversationStarted{BotId: "b", DebugEnabled: true}},
		{"d3", &eventv1.ConversationStarted{BotId: "b"}},
		{"d3", &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hi"}},
	} {
		ack, err := w.bus.Publish(context.Background(), envelope("acme", e.conv, at, e.p))
		if err != nil {
			t.Fatal(err)
		}
		last[e.conv] = ack.Sequence
		at = at.Add(time.Second)
	}
	want := map[string]bool{"d1": true, "d2": true, "d3": false}
	for conv, on := range want {
		var got *lifecyclev1.DebugMode
		w.waitFor(conv+" applied", func() bool {
			var err error
			got, err = s.client.GetDebugMode(as("ingest"), &lifecyclev1.GetDebugModeRequest{ConversationId: conv})
			if status.Code(err) == codes.NotFound {
				return false
			}
			if err != nil {
				t.Fatalf("%s: %v", conv, err)
			}
			return got.AppliedSequence >= last[conv]
		})
		if got.DebugEnabled != on || got.ConversationId != conv {
			t.Fatalf("%s debug mode %v, want %v", conv, got, on)
		}
		st, err := s.client.GetConversationState(as("read"), &lifecyclev1.GetConversationStateRequest{ConversationId: conv})
		if err != nil || st.DebugEnabled != on {
			t.Fatalf("%s state %v (%v), want debug %v", conv, st, err, on)
		}
	}

	if _, err := s.client.GetDebugMode(as("read"), &lifecyclev1.GetDebugModeRequest{ConversationId: "d1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("read key: %v, want PermissionDenied", err)
	}
	if _, err := s.client.GetDebugMode(as("publishable"), &lifecyclev1.GetDebugModeRequest{ConversationId: "d1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("publishable key: %v, want PermissionDenied", err)
	}
	if _, err := s.client.GetDebugMode(as("ingest"), &lifecyclev1.GetDebugModeRequest{ConversationId: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown conversation: %v, want NotFound", err)
	}
	_, err := s.client.GetDebugMode(as("ingest"), &lifecyclev1.GetDebugModeRequest{ConversationId: "bad id!"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad id: %v, want InvalidArgument", err)
	}
	var field string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 {
			field = br.FieldViolations[0].Field
		}
	}
	if field != "conversation_id" {
		t.Fatalf("bad id names field %q, want conversation_id", field)
	}
}
