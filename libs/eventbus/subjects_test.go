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
	if DerivedEventID("e1", "conversation_ended") != DerivedEventID("e1", "conversation_ended") {
		t.Fatal("derived ids must be deterministic")
	}
	if DerivedEventID("e1", "a") == DerivedEventID("e1", "b") || ClientEventID("t", "c", "k") == ClientEventID("t2", "c", "k") {
		t.Fatal("ids must differ by input")
	}
	if NewEventID() == NewEventID() {
		t.Fatal("new ids must be unique")
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
