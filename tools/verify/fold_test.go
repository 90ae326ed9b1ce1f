package verify

import (
	"fmt"
	"slices"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// ev builds one stream event of conversation c1.
func ev(id string, payload any) *eventv1.Envelope {
	env := &eventv1.Envelope{EventId: id, TenantId: "acme", ConversationId: "c1"}
	switch p := payload.(type) {
	case eventv1.Role:
		env.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{MessageId: "m-" + id, Role: p}}
	case *eventv1.MessagePosted:
		env.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: p}
	case string:
		switch p {
		case "started":
			env.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{}}
		case "goal":
			env.Payload = &eventv1.Envelope_GoalReached{GoalReached: &eventv1.GoalReached{GoalId: "g"}}
		case "flow":
			env.Payload = &eventv1.Envelope_FlowCompleted{FlowCompleted: &eventv1.FlowCompleted{FlowId: "f"}}
		case "close":
			env.Payload = &eventv1.Envelope_ConversationClosed{ConversationClosed: &eventv1.ConversationClosed{}}
		case "marker":
			env.Payload = &eventv1.Envelope_MarkerAdded{MarkerAdded: &eventv1.MarkerAdded{Marker: "m"}}
		case "usage":
			env.Payload = &eventv1.Envelope_UsageRecorded{UsageRecorded: &eventv1.UsageRecorded{CostMicros: 1}}
		}
	case *eventv1.ConversationEnded:
		env.Payload = &eventv1.Envelope_ConversationEnded{ConversationEnded: p}
	case *eventv1.TagApplied:
		env.Payload = &eventv1.Envelope_TagApplied{TagApplied: p}
	case *eventv1.TagRemoved:
		env.Payload = &eventv1.Envelope_TagRemoved{TagRemoved: p}
	case *eventv1.IssueDetected:
		env.Payload = &eventv1.Envelope_IssueDetected{IssueDetected: p}
	}
	return env
}

func ended(causation string, reason eventv1.EndReason) *eventv1.Envelope {
	e := ev("ended", &eventv1.ConversationEnded{Reason: reason})
	e.CausationId = causation
	return e
}

func fold(window int, events ...*eventv1.Envelope) *streamFold {
	f := newStreamFold()
	for _, e := range events {
		f.observe(e, window)
	}
	return f
}

const visitor, bot = eventv1.Role_ROLE_VISITOR, eventv1.Role_ROLE_BOT

// TestLifecycleFold checks where the log ends a conversation, by hand-counted
// examples.
func TestLifecycleFold(t *testing.T) {
	for name, c := range map[string]struct {
		events []*eventv1.Envelope
		want   lifecycleCounts
	}{
		// The close ended it: what follows it is late, markers and tags never count.
		"closed": {[]*eventv1.Envelope{ev("s", "started"), ev("v1", visitor), ev("g", "goal"), ev("cl", "close"), ev("v2", visitor),
			ended("cl", eventv1.EndReason_END_REASON_VISITOR_CLOSED), ev("f", "flow"), ev("mk", "marker"), ev("t", &eventv1.TagApplied{Tag: "x"})},
			lifecycleCounts{VisitorMessages: 1, GoalsReached: 1, LateEvents: 2}},
		// A sweep ended it before the close was applied: the close ended
		// nothing, facts up to the conversation_ended count.
		"swept": {[]*eventv1.Envelope{ev("v1", visitor), ev("cl", "close"), ev("v2", visitor), ev("f", "flow"),
			ended("", eventv1.EndReason_END_REASON_STALE_TIMEOUT), ev("v3", visitor)},
			lifecycleCounts{VisitorMessages: 2, FlowsCompleted: 1, LateEvents: 1}},
		// No conversation_ended yet: the close is the end.
		"close pending": {[]*eventv1.Envelope{ev("v1", visitor), ev("cl", "close"), ev("v2", visitor)},
			lifecycleCounts{VisitorMessages: 1, LateEvents: 1}},
		// Every stored copy counts; bot messages do not.
		"copies": {[]*eventv1.Envelope{ev("v1", visitor), ev("v1", visitor), ev("b1", bot)},
			lifecycleCounts{VisitorMessages: 2}},
	} {
		f := fold(50, c.events...)
		if got := f.lc.expected(); got != c.want {
			t.Errorf("%s: got %+v, want %+v", name, got, c.want)
		}
	}
}

// TestTaggingAndReportingFold checks the counts of tagging's facts and of
// ClickHouse, by hand-counted examples.
func TestTaggingAndReportingFold(t *testing.T) {
	m := func(id, msgID string) *eventv1.Envelope {
		return ev(id, &eventv1.MessagePosted{MessageId: msgID, Role: eventv1.Role_ROLE_VISITOR})
	}
	f := fold(2,
		ev("s", "started"), ev("s", "started"), // a second copy of the start
		m("e1", "m1"), m("e2", "m2"), m("e3", "m3"),
		m("e4", "m1"), // m1 left the window of 2 (m2, m3): counted again by tagging
		m("e5", "m3"), // m3 is in the window: no count, no event for tagging
		m("e3", "m3"), // a second copy of e3: tagging skips it as m3, reporting as e3
		ev("u", "usage"), ev("u", "usage"),
		ended("", eventv1.EndReason_END_REASON_BOT_COMPLETED),
		m("e6", "m6"), // after the end: an event, not a message for tagging and message_count
		ev("ta", &eventv1.TagApplied{Tag: "x", RuleId: "a"}), ev("tb", &eventv1.TagApplied{Tag: "x", RuleId: "b"}),
		ev("ty", &eventv1.TagApplied{Tag: "y", RuleId: "a"}), ev("ry", &eventv1.TagRemoved{Tag: "y", RuleId: "a"}),
		ev("i", &eventv1.IssueDetected{Issue: "long-wait", Detector: "builtin:long-wait"}),
	)
	// Tagging: s, s, e1, e2, e3, e4, u, u, ended, e6 = 10 events; visitor e1-e4.
	if want := (taggingCounts{Events: 10, VisitorMessages: 4}); f.tg.counts != want {
		t.Errorf("tagging: got %+v, want %+v", f.tg.counts, want)
	}
	// 17 stream messages; distinct ids s, e1-e6, u, ended, ta, tb, ty, ry, i = 14.
	if f.events != 17 || len(f.ids) != 14 {
		t.Errorf("events %d, distinct %d", f.events, len(f.ids))
	}
	// Reporting: messages e1-e6 = 6, before the end e1-e5 = 5; event_count
	// leaves out the copies of e3 and u (not of s): 17 - 2 = 15.
	if f.messages != 6 || f.messagesBeforeEnd != 5 || f.eventCount != 15 {
		t.Errorf("messages %d, before end %d, event_count %d", f.messages, f.messagesBeforeEnd, f.eventCount)
	}
	// Past the 2,000 ids reporting remembers, a second copy counts again.
	var many []*eventv1.Envelope
	for i := range reportingMaxSeen + 1 {
		many = append(many, ev(fmt.Sprint("m", i), visitor))
	}
	g := fold(50, append(many, many[0], many[reportingMaxSeen])...)
	if g.messages != reportingMaxSeen+1 || g.messagesBeforeEnd != reportingMaxSeen+2 || g.eventCount != reportingMaxSeen+2 {
		t.Errorf("past the seen bound: messages %d, before end %d, event_count %d", g.messages, g.messagesBeforeEnd, g.eventCount)
	}
	if !slices.Equal(f.sortedTags(), []string{"x"}) || !slices.Equal(sortedSet(f.issues), []string{"long-wait"}) {
		t.Errorf("tags %v, issues %v", f.sortedTags(), f.issues)
	}
	if f.ended != 1 || enumName(f.endReason.String(), "END_REASON_") != "bot_completed" {
		t.Errorf("ended %d %s", f.ended, f.endReason)
	}
}
