package scenario

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
)

var testStart = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

func newGen(t *testing.T, seed int64) *Generator {
	t.Helper()
	g, err := New(Options{Tenants: []string{"acme", "globex", "initech"}, Bots: 5, Seed: seed, RunID: "t1", Start: testStart, Spread: time.Hour, CloseFraction: 0.7})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestDeterministic(t *testing.T) {
	a, b := newGen(t, 42), newGen(t, 42)
	other := newGen(t, 43)
	differ := 0
	// Generate b in reverse order: a conversation must not depend on which
	// conversations were generated before it.
	bs := make([]Conversation, 300)
	for i := len(bs) - 1; i >= 0; i-- {
		bs[i] = b.Conversation(i)
	}
	for i := range bs {
		ca := a.Conversation(i)
		if ca.ID != bs[i].ID || ca.Tenant != bs[i].Tenant || len(ca.Events) != len(bs[i].Events) {
			t.Fatalf("conversation %d differs between generators with the same seed", i)
		}
		for k := range ca.Events {
			if !proto.Equal(ca.Events[k], bs[i].Events[k]) {
				t.Fatalf("conversation %d event %d differs:\n%v\n%v", i, k, ca.Events[k], bs[i].Events[k])
			}
		}
		co := other.Conversation(i)
		if len(co.Events) != len(ca.Events) || !proto.Equal(co.Events[len(co.Events)-1], ca.Events[len(ca.Events)-1]) {
			differ++
		}
	}
	if differ < 200 {
		t.Fatalf("another seed changed only %d of 300 conversations", differ)
	}
}

// TestOrderingAndLimits checks what ingest and lifecycle need: valid ids,
// strictly increasing times inside the window, a start first and a close
// last, no server-only kinds.
func TestOrderingAndLimits(t *testing.T) {
	g := newGen(t, 7)
	seen := map[string]bool{}
	for i := range 2000 {
		c := g.Conversation(i)
		if !eventbus.ValidConversationID(c.ID) || seen[c.ID] {
			t.Fatalf("conversation id %q invalid or repeated", c.ID)
		}
		seen[c.ID] = true
		if c.Events[0].GetConversationStarted() == nil {
			t.Fatalf("%s: first event is %s", c.ID, eventbus.Kind(c.Events[0]))
		}
		if c.Events[0].GetConversationStarted().GetVisitor().GetDisplayName() != "" {
			t.Fatalf("%s: display name must be left to ingest", c.ID)
		}
		var prev time.Time
		ids, msgIDs := map[string]bool{}, map[string]bool{}
		for k, e := range c.Events {
			at := e.GetOccurredAt().AsTime()
			if k > 0 && !at.After(prev) {
				t.Fatalf("%s: event %d at %v is not after %v", c.ID, k, at, prev)
			}
			if at.Before(testStart) || at.After(testStart.Add(time.Hour)) {
				t.Fatalf("%s: event %d at %v is outside the window", c.ID, k, at)
			}
			prev = at
			if e.ConversationId != c.ID || e.TenantId != "" || e.EventId != "" {
				t.Fatalf("%s: event %d ids: %v", c.ID, k, e)
			}
			if e.ClientEventId == "" || len(e.ClientEventId) > 128 || ids[e.ClientEventId] {
				t.Fatalf("%s: client event id %q missing, too long or repeated", c.ID, e.ClientEventId)
			}
			ids[e.ClientEventId] = true
			kind := eventbus.Kind(e)
			switch kind {
			case "", "conversation_ended", "engagement_classified", "operator_no_response", "late_event_recorded",
				"tag_applied", "tag_removed", "label_added", "label_removed", "flagged", "unflagged", "issue_detected":
				t.Fatalf("%s: event %d has kind %q, which clients may not send", c.ID, k, kind)
			case "conversation_closed":
				if k != len(c.Events)-1 || !c.Closed {
					t.Fatalf("%s: close at %d of %d (closed=%v)", c.ID, k, len(c.Events), c.Closed)
				}
			case "message_posted":
				m := e.GetMessagePosted()
				if m.Role == eventv1.Role_ROLE_UNSPECIFIED || !utf8.ValidString(m.Text) || len(m.Text) > 16<<10 || m.Text == "" {
					t.Fatalf("%s: bad message %v", c.ID, m)
				}
				if msgIDs[m.MessageId] {
					t.Fatalf("%s: message id %s repeated", c.ID, m.MessageId)
				}
				msgIDs[m.MessageId] = true
				if m.Role == eventv1.Role_ROLE_AGENT && m.AgentId == "" {
					t.Fatalf("%s: agent message without agent id", c.ID)
				}
			}
		}
		if c.Closed != (eventbus.Kind(c.Events[len(c.Events)-1]) == "conversation_closed") {
			t.Fatalf("%s: Closed=%v but last event is %s", c.ID, c.Closed, eventbus.Kind(c.Events[len(c.Events)-1]))
		}
	}
}

// TestRealism checks that a run has the variety the issue asks for.
func TestRealism(t *testing.T) {
	g := newGen(t, 1)
	const n = 3000
	kinds := map[string]int{}
	channels := map[eventv1.Channel]int{}
	tenants := map[string]int{}
	closedBy := map[eventv1.Actor]int{}
	var closed, unidentified, tests, paid, dropped, failed int
	for i := range n {
		c := g.Conversation(i)
		tenants[c.Tenant]++
		bot, visitor := 0, 0
		for _, e := range c.Events {
			kinds[eventbus.Kind(e)]++
			switch p := e.Payload.(type) {
			case *eventv1.Envelope_ConversationStarted:
				channels[p.ConversationStarted.Channel]++
				if p.ConversationStarted.Type == eventv1.ConversationType_CONVERSATION_TYPE_TEST {
					tests++
				}
			case *eventv1.Envelope_MessagePosted:
				m := p.MessagePosted
				if m.Unidentified {
					unidentified++
				}
				if m.Paid {
					paid++
				}
				if m.Role == eventv1.Role_ROLE_BOT {
					bot++
					if m.ReplyToMessageId != "" && m.ResponseTimeMs == 0 {
						t.Fatalf("%s: bot answer without response time", c.ID)
					}
				}
				if m.Role == eventv1.Role_ROLE_VISITOR && m.AgentId == "" {
					visitor++
				}
			case *eventv1.Envelope_FlowDropped:
				dropped++
				if p.FlowDropped.Failed {
					failed++
				}
			case *eventv1.Envelope_ConversationClosed:
				closed++
				closedBy[p.ConversationClosed.ClosedBy]++
			}
		}
		if bot+visitor < 3 || bot+visitor > 30 {
			t.Fatalf("%s: %d bot and visitor messages", c.ID, bot+visitor)
		}
	}
	if f := float64(closed) / n; f < 0.65 || f > 0.75 {
		t.Errorf("closed share %.2f, want about 0.7", f)
	}
	for _, k := range []string{"conversation_started", "page_viewed", "message_posted", "variables_captured", "flow_started", "flow_step",
		"flow_completed", "flow_dropped", "goal_reached", "lead_captured", "usage_recorded", "handoff_requested", "agent_joined",
		"agent_left", "conversation_closed", "debug_trace", "marker_added"} {
		if kinds[k] == 0 {
			t.Errorf("no %s in %d conversations", k, n)
		}
	}
	if kinds["conversation_started"] != n {
		t.Errorf("%d conversation_started for %d conversations", kinds["conversation_started"], n)
	}
	if len(channels) < 8 || unidentified == 0 || tests == 0 || paid == 0 || failed == 0 || dropped == failed {
		t.Errorf("too little variety: channels %v, unidentified %d, test %d, paid %d, dropped %d (failed %d)", channels, unidentified, tests, paid, dropped, failed)
	}
	if len(closedBy) != 3 {
		t.Errorf("closed by %v, want visitor, bot and agent", closedBy)
	}
	if !(tenants["acme"] > tenants["globex"] && tenants["globex"] > tenants["initech"] && tenants["initech"] > 0) {
		t.Errorf("tenant weights: %v", tenants)
	}
	if f := float64(kinds["flow_completed"]) / float64(kinds["flow_started"]); f < 0.3 || f > 0.8 {
		t.Errorf("flows completed %.2f of started", f)
	}
}

func TestPlaceCompressesLongConversations(t *testing.T) {
	g, err := New(Options{Tenants: []string{"a"}, Start: testStart, Spread: 2 * time.Second, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		c := g.Conversation(i)
		last := c.Events[len(c.Events)-1].GetOccurredAt().AsTime()
		if last.After(g.Latest()) || c.Events[0].GetOccurredAt().AsTime().Before(testStart) {
			t.Fatalf("%s spans %v..%v, outside the 2s window", c.ID, c.Events[0].GetOccurredAt().AsTime(), last)
		}
	}
	if got := g.Conversation(0).Events[0].GetOccurredAt().AsTime(); !got.Equal(testStart) {
		t.Fatalf("conversation 0 starts at %v, want Start", got)
	}
}

func TestOptionsValidation(t *testing.T) {
	for name, o := range map[string]Options{
		"no tenants":  {Start: testStart},
		"bad run id":  {Tenants: []string{"a"}, Start: testStart, RunID: "a.b"},
		"long run id": {Tenants: []string{"a"}, Start: testStart, RunID: strings.Repeat("x", 41)},
		"too early":   {Tenants: []string{"a"}, Start: time.Date(1999, 12, 31, 0, 0, 0, 0, time.UTC)},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	g, err := New(Options{Tenants: []string{"a"}, Start: testStart})
	if err != nil {
		t.Fatal(err)
	}
	if c := g.Conversation(5); c.ID != "lg-5" || c.Closed {
		t.Fatalf("defaults: id %s, closed %v (CloseFraction 0 closes nothing)", c.ID, c.Closed)
	}
}

func BenchmarkConversation(b *testing.B) {
	g, err := New(Options{Tenants: []string{"a", "b"}, Start: testStart, Spread: time.Hour, CloseFraction: 0.7})
	if err != nil {
		b.Fatal(err)
	}
	events := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		events += len(g.Conversation(i).Events)
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}
