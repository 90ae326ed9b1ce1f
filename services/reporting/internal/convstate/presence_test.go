package convstate_test

import (
	"slices"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Agents present follow joins and leaves; ending the conversation ends
// presence; the binary encoding keeps them.
func TestAgentsPresent(t *testing.T) {
	s := convstate.New("acme", "c1")
	seq := uint64(0)
	apply := func(p func(e *eventv1.Envelope)) {
		seq++
		e := &eventv1.Envelope{TenantId: "acme", ConversationId: "c1", OccurredAt: timestamppb.New(t0), Producer: "ingest"}
		p(e)
		s.Apply(e, seq)
	}
	join := func(id string) {
		apply(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_AgentJoined{AgentJoined: &eventv1.AgentJoined{AgentId: id}}
		})
	}
	left := func(id string) {
		apply(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_AgentLeft{AgentLeft: &eventv1.AgentLeft{AgentId: id}}
		})
	}
	check := func(step string, want ...string) {
		t.Helper()
		if !slices.Equal(s.AgentsPresent, want) {
			t.Errorf("%s: present %v, want %v", step, s.AgentsPresent, want)
		}
	}
	join("ann")
	join("bob")
	check("two joined", "ann", "bob")
	left("ann")
	check("ann left", "bob")
	b, err := s.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back convstate.State
	if err := back.UnmarshalBinary(b); err != nil || !slices.Equal(back.AgentsPresent, []string{"bob"}) {
		t.Errorf("decoded present %v (%v)", back.AgentsPresent, err)
	}
	left("")
	check("everyone left")
	join("")
	check("agent without id", "-")
	apply(func(e *eventv1.Envelope) {
		e.Payload = &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{}}
	})
	check("ended")
	join("cid")
	check("joined after the end")
	if !s.TakenOver {
		t.Error("taken over is kept")
	}
}
