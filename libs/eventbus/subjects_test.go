package eventbus

import (
	"strings"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

func TestKind(t *testing.T) {
	env := &eventv1.Envelope{Payload: &eventv1.Envelope_AgentJoined{AgentJoined: &eventv1.AgentJoined{}}}
	if got := Kind(env); got != "agent_joined" {
		t.Fatalf("Kind = %q", got)
	}
	if Kind(&eventv1.Envelope{}) != "" {
		t.Fatal("empty envelope has a kind")
	}
	kinds := Kinds()
	if len(kinds) < 29 || kinds[0] != "conversation_started" || !IsKind("message_posted") || IsKind("nope") {
		t.Fatalf("Kinds = %v", kinds)
	}
}

func TestSubjects(t *testing.T) {
	s := ConvSubject("acme", "c-1", "message_posted")
	if s != "parley.conv.v1.acme.c-1.message_posted" {
		t.Fatal(s)
	}
	tenant, conv, kind, err := ParseConvSubject(s)
	if err != nil || tenant != "acme" || conv != "c-1" || kind != "message_posted" {
		t.Fatalf("%s %s %s %v", tenant, conv, kind, err)
	}
	for _, bad := range []string{"parley.conv.v1.a.b", "other.a.b.c", "parley.conv.v1.a.b.c.d"} {
		if _, _, _, err := ParseConvSubject(bad); err == nil {
			t.Fatalf("%q parsed", bad)
		}
	}
	if ValidConversationID("a.b") || ValidConversationID("a b") || ValidConversationID("") || !ValidConversationID("Ab_9-x") {
		t.Fatal("conversation id rules")
	}
	if ValidTenantID(strings.Repeat("a", 65)) || !ValidTenantID(strings.Repeat("a", 64)) {
		t.Fatal("tenant id length")
	}
}

func TestIDs(t *testing.T) {
	if DerivedEventID("acme", "e1", "conversation_ended") != DerivedEventID("acme", "e1", "conversation_ended") {
		t.Fatal("derived ids must be deterministic")
	}
	if DerivedEventID("acme", "e1", "a") == DerivedEventID("acme", "e1", "b") || ClientEventID("t", "c", "k") == ClientEventID("t2", "c", "k") {
		t.Fatal("ids must differ by input")
	}
	if NewEventID() == NewEventID() {
		t.Fatal("new ids must be unique")
	}
}

// TestDerivedIDsDifferAcrossTenants checks that two tenants deriving an event
// from the same cause get different ids and different deduplication keys.
func TestDerivedIDsDifferAcrossTenants(t *testing.T) {
	for _, kind := range []string{"conversation_ended", "engagement_classified", "operator_no_response", "late_event_recorded"} {
		a, b := DerivedEventID("tenant-a", "e1", kind), DerivedEventID("tenant-b", "e1", kind)
		if a == b {
			t.Fatalf("%s: both tenants derive %s from cause e1", kind, a)
		}
	}
	// Ids that already named the tenant in their cause keep their value:
	// the conversation_ended of acme's c1 and a tag removal (values of the
	// previous derivation, UUIDv5 of "acme/c1/conversation_ended" and
	// "acme/c1/e1/tag_removed").
	if got := DerivedEventID("acme", "c1", "conversation_ended"); got != "37e18e80-8ee6-5e70-b0d6-6d3b9ddae3fd" {
		t.Fatalf("conversation_ended id changed: %s", got)
	}
	if got := DerivedEventID("acme", "c1/e1", "tag_removed"); got != "a608774c-0293-58ff-86e5-b0713c3e1a6a" {
		t.Fatalf("tag_removed id changed: %s", got)
	}
}

// TestMsgID checks the deduplication key: one event id of two tenants gives
// two keys, and readers recover the event id from the key and from a bare
// id stored before keys carried the tenant.
func TestMsgID(t *testing.T) {
	id := NewEventID()
	if MsgID("a", id) == MsgID("b", id) || MsgID("a", id) != "a/"+id {
		t.Fatalf("keys %q %q", MsgID("a", id), MsgID("b", id))
	}
	for _, c := range []struct{ tenant, msgID, want string }{
		{"a", "a/" + id, id},
		{"a", id, id},
		{"a", "b/" + id, ""},
		{"a", "ab/" + id, ""},
	} {
		if got := EventIDOfMsgID(c.tenant, c.msgID); got != c.want {
			t.Errorf("EventIDOfMsgID(%q, %q) = %q, want %q", c.tenant, c.msgID, got, c.want)
		}
	}
}

// FuzzParseConvSubject checks that any subject built from valid ids parses
// back, and that parsing never panics on outside input.
func FuzzParseConvSubject(f *testing.F) {
	f.Add("parley.conv.v1.acme.c1.message_posted")
	f.Add("parley.conv.v1...")
	f.Fuzz(func(t *testing.T, subject string) {
		tenant, conv, kind, err := ParseConvSubject(subject)
		if err != nil {
			return
		}
		if ConvSubject(tenant, conv, kind) != subject {
			t.Fatalf("round trip of %q gave %q", subject, ConvSubject(tenant, conv, kind))
		}
	})
}
