package machine_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/lifecycle/internal/machine"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var t0 = time.Date(2026, 5, 4, 10, 0, 0, 0, time.UTC)

// log builds a conversation's events with increasing stream sequences.
type log struct {
	seq uint64
}

func (l *log) ev(at time.Duration, p any) machine.Event {
	l.seq++
	env := &eventv1.Envelope{
		EventId: fmt.Sprintf("00000000-0000-7000-8000-%012d", l.seq), TenantId: "acme", ConversationId: "c1",
		OccurredAt: timestamppb.New(t0.Add(at)), RecordedAt: timestamppb.New(t0.Add(at)), Producer: "ingest",
	}
	switch p := p.(type) {
	case *eventv1.ConversationStarted:
		env.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: p}
	case *eventv1.MessagePosted:
		env.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: p}
	case *eventv1.PageViewed:
		env.Payload = &eventv1.Envelope_PageViewed{PageViewed: p}
	case *eventv1.FlowCompleted:
		env.Payload = &eventv1.Envelope_FlowCompleted{FlowCompleted: p}
	case *eventv1.GoalReached:
		env.Payload = &eventv1.Envelope_GoalReached{GoalReached: p}
	case *eventv1.HandoffRequested:
		env.Payload = &eventv1.Envelope_HandoffRequested{HandoffRequested: p}
	case *eventv1.AgentJoined:
		env.Payload = &eventv1.Envelope_AgentJoined{AgentJoined: p}
	case *eventv1.AgentLeft:
		env.Payload = &eventv1.Envelope_AgentLeft{AgentLeft: p}
	case *eventv1.ConversationClosed:
		env.Payload = &eventv1.Envelope_ConversationClosed{ConversationClosed: p}
	case *eventv1.TagApplied:
		env.Producer = "tagging"
		env.Payload = &eventv1.Envelope_TagApplied{TagApplied: p}
	case *eventv1.MarkerAdded:
		env.Payload = &eventv1.Envelope_MarkerAdded{MarkerAdded: p}
	case *eventv1.Envelope:
		// A derived event read back from the log.
		env = proto.Clone(p).(*eventv1.Envelope)
	default:
		panic(fmt.Sprintf("unsupported payload %T", p))
	}
	env.Kind = eventbus.Kind(env)
	return machine.Event{Envelope: env, Seq: l.seq}
}

func visitor(text string) *eventv1.MessagePosted {
	return &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text}
}

func agent(text string) *eventv1.MessagePosted {
	return &eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, Text: text}
}

func closed(by eventv1.Actor) *eventv1.ConversationClosed {
	return &eventv1.ConversationClosed{ClosedBy: by}
}

// run applies events in order and collects every output.
func run(s machine.State, evs ...machine.Event) (machine.State, []machine.Output) {
	var outs []machine.Output
	for _, e := range evs {
		var out machine.Output
		s, out = machine.Apply(s, e, t0.Add(48*time.Hour))
		outs = append(outs, out)
	}
	return s, outs
}

func emitted(outs []machine.Output) []*eventv1.Envelope {
	var all []*eventv1.Envelope
	for _, o := range outs {
		all = append(all, o.Emit...)
	}
	return all
}

func kinds(envs []*eventv1.Envelope) []string {
	var k []string
	for _, e := range envs {
		k = append(k, eventbus.Kind(e))
	}
	return k
}

func TestFirstEventOfAnyKindOpensTheConversation(t *testing.T) {
	for _, p := range []any{
		visitor("hi"), &eventv1.PageViewed{Url: "https://x"}, &eventv1.TagApplied{Tag: "t"}, &eventv1.MarkerAdded{Marker: "m"},
		&eventv1.ConversationStarted{BotId: "b", Channel: eventv1.Channel_CHANNEL_WHATSAPP},
	} {
		var l log
		e := l.ev(time.Minute, p)
		s, outs := run(machine.State{}, e)
		if s.Status != machine.StatusActive || s.TenantID != "acme" || s.ConversationID != "c1" || s.AppliedSeq != 1 {
			t.Errorf("%T: state %+v", p, s)
		}
		if !s.StartedAt.Equal(t0.Add(time.Minute)) || !s.LastActivityAt.Equal(t0.Add(time.Minute)) {
			t.Errorf("%T: started %v last activity %v", p, s.StartedAt, s.LastActivityAt)
		}
		if len(emitted(outs)) != 0 {
			t.Errorf("%T: emitted %v", p, kinds(emitted(outs)))
		}
	}
}

func TestConversationStartedFillsMetadata(t *testing.T) {
	var l log
	s, _ := run(machine.State{},
		l.ev(2*time.Minute, visitor("hi")),
		l.ev(time.Minute, &eventv1.ConversationStarted{BotId: "support", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET, Type: eventv1.ConversationType_CONVERSATION_TYPE_TEST}),
		l.ev(3*time.Minute, &eventv1.ConversationStarted{}), // empty metadata keeps what is known
	)
	if s.BotID != "support" || s.Channel != eventv1.Channel_CHANNEL_WEB_WIDGET || s.Type != eventv1.ConversationType_CONVERSATION_TYPE_TEST {
		t.Fatalf("metadata: %+v", s)
	}
	if !s.StartedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("started_at %v: want the earliest event time", s.StartedAt)
	}
}

func TestWhatIsActivity(t *testing.T) {
	tests := []struct {
		name     string
		p        any
		activity bool
	}{
		{"visitor message", visitor("x"), true},
		{"agent message", agent("x"), true},
		{"page", &eventv1.PageViewed{}, true},
		{"flow completed", &eventv1.FlowCompleted{}, true},
		{"goal", &eventv1.GoalReached{}, true},
		{"handoff", &eventv1.HandoffRequested{}, true},
		{"agent joined", &eventv1.AgentJoined{AgentId: "a"}, true},
		{"agent left", &eventv1.AgentLeft{AgentId: "a"}, true},
		{"tag (tagging)", &eventv1.TagApplied{Tag: "x"}, false},
		{"marker (annotation)", &eventv1.MarkerAdded{Marker: "x"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l log
			s, _ := run(machine.State{}, l.ev(0, visitor("open")), l.ev(time.Hour, tt.p))
			if got := s.LastActivityAt.Equal(t0.Add(time.Hour)); got != tt.activity {
				t.Fatalf("last activity %v, activity=%v want %v", s.LastActivityAt, got, tt.activity)
			}
			if s.AppliedSeq != 2 {
				t.Fatalf("applied seq %d", s.AppliedSeq)
			}
		})
	}
}

func TestLastActivityNeverMovesBack(t *testing.T) {
	var l log
	s, _ := run(machine.State{}, l.ev(time.Hour, visitor("late clock")), l.ev(time.Minute, visitor("early clock")))
	if !s.LastActivityAt.Equal(t0.Add(time.Hour)) || !s.StartedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("last activity %v started %v", s.LastActivityAt, s.StartedAt)
	}
}

func TestReasonFor(t *testing.T) {
	tests := map[eventv1.Actor]eventv1.EndReason{
		eventv1.Actor_ACTOR_VISITOR:       eventv1.EndReason_END_REASON_VISITOR_CLOSED,
		eventv1.Actor_ACTOR_AGENT:         eventv1.EndReason_END_REASON_AGENT_CLOSED,
		eventv1.Actor_ACTOR_BOT:           eventv1.EndReason_END_REASON_BOT_COMPLETED,
		eventv1.Actor_ACTOR_ADMINISTRATOR: eventv1.EndReason_END_REASON_ADMINISTRATOR,
		eventv1.Actor_ACTOR_SYSTEM:        eventv1.EndReason_END_REASON_BOT_COMPLETED,
		eventv1.Actor_ACTOR_UNSPECIFIED:   eventv1.EndReason_END_REASON_BOT_COMPLETED,
		eventv1.Actor(99):                 eventv1.EndReason_END_REASON_BOT_COMPLETED,
	}
	for actor, want := range tests {
		if got := machine.ReasonFor(actor); got != want {
			t.Errorf("%v: got %v want %v", actor, got, want)
		}
	}
}

func TestCloseEndsWithEndedThenClassified(t *testing.T) {
	for _, actor := range []eventv1.Actor{eventv1.Actor_ACTOR_VISITOR, eventv1.Actor_ACTOR_AGENT, eventv1.Actor_ACTOR_BOT, eventv1.Actor_ACTOR_ADMINISTRATOR, eventv1.Actor_ACTOR_SYSTEM} {
		t.Run(actor.String(), func(t *testing.T) {
			var l log
			open := l.ev(0, visitor("hi"))
			open.Envelope.CorrelationId = "corr-1"
			join := l.ev(time.Minute, &eventv1.AgentJoined{AgentId: "ann"})
			closeEv := l.ev(10*time.Minute, closed(actor))
			closeEv.Envelope.CorrelationId = "corr-2"
			s, outs := run(machine.State{}, open, join, closeEv)
			if s.Status != machine.StatusEnded || s.EndReason != machine.ReasonFor(actor) || !s.EndedAt.Equal(t0.Add(10*time.Minute)) || s.EndSeq != 3 {
				t.Fatalf("state %+v", s)
			}
			if !outs[2].Ended {
				t.Fatal("close did not report the end")
			}
			em := emitted(outs)
			if !reflect.DeepEqual(kinds(em), []string{"conversation_ended", "engagement_classified"}) {
				t.Fatalf("emitted %v", kinds(em))
			}
			ended, classified := em[0], em[1]
			if ended.EventId != machine.EndedEventID("acme", "c1") || classified.EventId != machine.ClassifiedEventID("acme", ended.EventId) {
				t.Fatalf("ids %s %s", ended.EventId, classified.EventId)
			}
			if ended.Producer != "lifecycle" || ended.CausationId != closeEv.Envelope.EventId || ended.CorrelationId != "corr-2" ||
				classified.CausationId != ended.EventId || classified.CorrelationId != "corr-2" || ended.Kind != "conversation_ended" {
				t.Fatalf("provenance: %v / %v", ended, classified)
			}
			if !ended.OccurredAt.AsTime().Equal(t0.Add(10*time.Minute)) || ended.TenantId != "acme" || ended.ConversationId != "c1" {
				t.Fatalf("ended envelope %v", ended)
			}
			ce := ended.GetConversationEnded()
			if ce.Reason != machine.ReasonFor(actor) || !ce.LastActivityAt.AsTime().Equal(t0.Add(10*time.Minute)) {
				t.Fatalf("payload %v", ce)
			}
			wantBy := ""
			if actor == eventv1.Actor_ACTOR_AGENT {
				wantBy = "ann"
			}
			if ce.EndedBy != wantBy || s.EndedBy != wantBy {
				t.Fatalf("ended_by %q / %q, want %q", ce.EndedBy, s.EndedBy, wantBy)
			}
			ec := classified.GetEngagementClassified()
			if ec.Engagement != eventv1.Engagement_ENGAGEMENT_ENGAGED || ec.VisitorMessages != 1 || s.Engagement != ec.Engagement || s.Resolved != ec.Resolved {
				t.Fatalf("classification %v, state %v/%v", ec, s.Engagement, s.Resolved)
			}
		})
	}
}

func TestEndedIsFinal(t *testing.T) {
	tests := []struct {
		name string
		p    any
		late bool
	}{
		{"visitor message", visitor("anyone?"), true},
		{"second close", closed(eventv1.Actor_ACTOR_VISITOR), true},
		{"handoff", &eventv1.HandoffRequested{}, true},
		{"goal", &eventv1.GoalReached{}, true},
		{"tagging reacts to the end", &eventv1.TagApplied{Tag: "abandoned"}, false},
		{"marker added later", &eventv1.MarkerAdded{Marker: "reviewed"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l log
			s, _ := run(machine.State{}, l.ev(0, visitor("hi")), l.ev(time.Minute, closed(eventv1.Actor_ACTOR_VISITOR)))
			ended := s
			lateEv := l.ev(time.Hour, tt.p)
			s, outs := run(s, lateEv)
			if s.Status != machine.StatusEnded || !s.EndedAt.Equal(ended.EndedAt) || s.EndReason != ended.EndReason || !s.LastActivityAt.Equal(ended.LastActivityAt) ||
				s.VisitorMessages != ended.VisitorMessages || s.GoalsReached != ended.GoalsReached || s.AwaitingAgent {
				t.Fatalf("the event changed an ended conversation: %+v", s)
			}
			em := emitted(outs)
			if !tt.late {
				if len(em) != 0 || s.LateEvents != 0 || outs[0].Late {
					t.Fatalf("recorded as late: %v", kinds(em))
				}
				return
			}
			if len(em) != 1 || s.LateEvents != 1 || !outs[0].Late {
				t.Fatalf("want one late_event_recorded, got %v (late events %d)", kinds(em), s.LateEvents)
			}
			ler := em[0]
			p := ler.GetLateEventRecorded()
			if ler.EventId != machine.LateEventID(lateEv.Envelope.TenantId, lateEv.Envelope.EventId) || ler.CausationId != lateEv.Envelope.EventId ||
				p.LateEventId != lateEv.Envelope.EventId || p.LateEventKind != lateEv.Envelope.Kind || !p.EndedAt.AsTime().Equal(ended.EndedAt) {
				t.Fatalf("late_event_recorded %v", ler)
			}
		})
	}
}

func TestRedeliveryIsANoOp(t *testing.T) {
	var l log
	open, closeEv := l.ev(0, visitor("hi")), l.ev(time.Minute, closed(eventv1.Actor_ACTOR_VISITOR))
	s, _ := run(machine.State{}, open, closeEv)
	again, outs := run(s, open, closeEv)
	if !reflect.DeepEqual(again, s) || len(emitted(outs)) != 0 {
		t.Fatalf("redelivery changed state or emitted %v", kinds(emitted(outs)))
	}
}

func TestStaleEndAndTheLogCatchingUp(t *testing.T) {
	var l log
	s, _ := run(machine.State{}, l.ev(0, visitor("hi")), l.ev(time.Minute, &eventv1.HandoffRequested{}))
	sweepAt := t0.Add(25 * time.Hour)
	s, out, ok := machine.End(s, machine.EndCommand{Reason: eventv1.EndReason_END_REASON_STALE_TIMEOUT, At: sweepAt}, sweepAt)
	if !ok || s.Status != machine.StatusEnded || s.EndSeq != 0 || s.AwaitingAgent {
		t.Fatalf("end: %v %+v", ok, s)
	}
	if !reflect.DeepEqual(kinds(out.Emit), []string{"conversation_ended", "engagement_classified"}) || !out.Ended {
		t.Fatalf("emitted %v", kinds(out.Emit))
	}
	ended := out.Emit[0]
	if ended.CausationId != "" || !ended.OccurredAt.AsTime().Equal(sweepAt) || !ended.GetConversationEnded().LastActivityAt.AsTime().Equal(t0.Add(time.Minute)) {
		t.Fatalf("stale end envelope %v", ended)
	}
	if _, _, ok := machine.End(s, machine.EndCommand{Reason: eventv1.EndReason_END_REASON_STALE_TIMEOUT, At: sweepAt}, sweepAt); ok {
		t.Fatal("ended twice")
	}
	// A message the log holds before the conversation_ended is applied, not late.
	s, outs := run(s, l.ev(25*time.Hour+time.Second, visitor("still there?")))
	if s.VisitorMessages != 2 || s.LateEvents != 0 || len(emitted(outs)) != 0 || s.Status != machine.StatusEnded {
		t.Fatalf("pre-end event: %+v %v", s, kinds(emitted(outs)))
	}
	// Our conversation_ended comes back from the log: from now on, late.
	s, outs = run(s, l.ev(0, ended))
	if s.EndSeq != l.seq || len(emitted(outs)) != 0 || outs[0].Ended {
		t.Fatalf("read back: %+v", s)
	}
	s, outs = run(s, l.ev(26*time.Hour, visitor("hello?")))
	if s.LateEvents != 1 || s.VisitorMessages != 2 || len(emitted(outs)) != 1 {
		t.Fatalf("after the end: %+v", s)
	}
}

func TestConversationEndedFromTheLogEndsAnActiveConversation(t *testing.T) {
	var l log
	s, _ := run(machine.State{}, l.ev(0, visitor("hi")))
	end := &eventv1.Envelope{
		EventId: machine.EndedEventID("acme", "c1"), TenantId: "acme", ConversationId: "c1", Producer: "lifecycle",
		OccurredAt: timestamppb.New(t0.Add(30 * time.Hour)),
		Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{
			Reason: eventv1.EndReason_END_REASON_ADMINISTRATOR, EndedBy: "root", LastActivityAt: timestamppb.New(t0),
		}},
	}
	s, outs := run(s, l.ev(0, end))
	if s.Status != machine.StatusEnded || s.EndReason != eventv1.EndReason_END_REASON_ADMINISTRATOR || s.EndedBy != "root" ||
		!s.EndedAt.Equal(t0.Add(30*time.Hour)) || s.EndSeq != 2 || s.Engagement != eventv1.Engagement_ENGAGEMENT_ENGAGED {
		t.Fatalf("state %+v", s)
	}
	if len(emitted(outs)) != 0 || !outs[0].Ended {
		t.Fatalf("want only the view update, got %v ended=%v", kinds(emitted(outs)), outs[0].Ended)
	}
	// engagement_classified from the log is authoritative.
	cl := &eventv1.Envelope{EventId: "x", TenantId: "acme", ConversationId: "c1", Payload: &eventv1.Envelope_EngagementClassified{
		EngagementClassified: &eventv1.EngagementClassified{Engagement: eventv1.Engagement_ENGAGEMENT_NO_REPLY, Resolved: true},
	}}
	s, _ = run(s, l.ev(0, cl))
	if s.Engagement != eventv1.Engagement_ENGAGEMENT_NO_REPLY || !s.Resolved {
		t.Fatalf("classification not taken from the log: %v %v", s.Engagement, s.Resolved)
	}
}

func TestCloseBeforeALoggedEndDoesNotEnd(t *testing.T) {
	var l log
	s, _ := run(machine.State{}, l.ev(0, visitor("hi")))
	c := l.ev(time.Minute, closed(eventv1.Actor_ACTOR_VISITOR))
	c.EndedLater = true
	s, outs := run(s, c)
	if s.Status != machine.StatusActive || len(emitted(outs)) != 0 || !s.LastActivityAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("state %+v emitted %v", s, kinds(emitted(outs)))
	}
}

func TestTakeoverAndResponseTimes(t *testing.T) {
	var l log
	s, _ := run(machine.State{},
		l.ev(0, visitor("I want a human")),
		l.ev(10*time.Second, &eventv1.HandoffRequested{Reason: "asked"}),
	)
	if !s.AwaitingAgent || !s.HandoffRequestedAt.Equal(t0.Add(10*time.Second)) || s.HandoffEventID == "" {
		t.Fatalf("handoff: %+v", s)
	}
	s, _ = run(s,
		l.ev(20*time.Second, visitor("hello?")),
		l.ev(70*time.Second, &eventv1.AgentJoined{AgentId: "ann", AgentName: "Ann"}),
	)
	if s.AwaitingAgent || !s.TakeoverAt.Equal(t0.Add(70*time.Second)) || s.AgentID != "ann" || s.AgentName != "Ann" || !s.AgentPresent() {
		t.Fatalf("join: %+v", s)
	}
	s, _ = run(s,
		l.ev(90*time.Second, agent("Hi, Ann here")),                                                        // first response: 80s after the request; reply to "hello?" after 70s
		l.ev(100*time.Second, visitor("my order")),                                                         // pending
		l.ev(110*time.Second, visitor("is late")),                                                          // still the same pending wait
		l.ev(130*time.Second, agent("checking")),                                                           // reply after 30s
		l.ev(140*time.Second, agent("found it")),                                                           // follow-up, not a reply
		l.ev(150*time.Second, &eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, ResponseTimeMs: 4000}), // client-provided
		l.ev(200*time.Second, &eventv1.AgentLeft{AgentId: "ann"}),
	)
	if !s.HasFirstResponse || s.FirstResponseMS != 80_000 {
		t.Fatalf("first response %v %d", s.HasFirstResponse, s.FirstResponseMS)
	}
	if s.AgentReplies != 3 || s.AgentResponseMSSum != 70_000+30_000+4_000 || s.AvgResponseMS() != 104_000/3 {
		t.Fatalf("replies %d sum %d", s.AgentReplies, s.AgentResponseMSSum)
	}
	if !s.AgentLeftAt.Equal(t0.Add(200*time.Second)) || s.AgentPresent() || !s.TakeoverAt.Equal(t0.Add(70*time.Second)) {
		t.Fatalf("leave: %+v", s)
	}
}

// Lifecycle states the response times it owns in the engagement_classified
// of the end; a conversation no agent answered leaves first_response_ms unset.
func TestEndStatesResponseTimes(t *testing.T) {
	var l log
	s, outs := run(machine.State{},
		l.ev(0, visitor("a human please")),
		l.ev(10*time.Second, &eventv1.HandoffRequested{}),
		l.ev(25*time.Second, &eventv1.AgentJoined{AgentId: "ann"}),
		l.ev(40*time.Second, agent("hi")),                                                                 // first: 30s after the request; no visitor message waits since the handoff
		l.ev(50*time.Second, visitor("order 7")),                                                          // pending
		l.ev(62*time.Second, agent("on it")),                                                              // reply after 12s
		l.ev(70*time.Second, &eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, ResponseTimeMs: 6000}), // client-measured
		l.ev(80*time.Second, &eventv1.ConversationClosed{ClosedBy: eventv1.Actor_ACTOR_VISITOR}),
	)
	ec := emitted(outs)[1].GetEngagementClassified()
	if s.Status != machine.StatusEnded || ec == nil {
		t.Fatalf("not ended: %v", kinds(emitted(outs)))
	}
	if ec.FirstResponseMs == nil || ec.GetFirstResponseMs() != 30_000 || ec.AgentReplies != 2 || ec.AgentResponseMsSum != 12_000+6_000 ||
		ec.AverageResponseMs != 18_000/2 {
		t.Fatalf("response times %v", ec)
	}
	_, outs = run(machine.State{}, l.ev(0, visitor("hi")), l.ev(time.Second, &eventv1.ConversationClosed{ClosedBy: eventv1.Actor_ACTOR_VISITOR}))
	if ec := emitted(outs)[1].GetEngagementClassified(); ec.FirstResponseMs != nil || ec.AgentReplies != 0 || ec.AverageResponseMs != 0 {
		t.Fatalf("no agent: %v", ec)
	}
}

func TestFirstResponseWithoutHandoffCountsFromTheJoin(t *testing.T) {
	var l log
	s, _ := run(machine.State{}, l.ev(0, &eventv1.AgentJoined{AgentId: "bob"}), l.ev(5*time.Second, agent("hi")))
	if !s.HasFirstResponse || s.FirstResponseMS != 5000 || s.AgentReplies != 0 {
		t.Fatalf("%+v", s)
	}
}

func TestBotConversationHasNoOperatorTimes(t *testing.T) {
	var l log
	s, _ := run(machine.State{}, l.ev(0, visitor("hi")), l.ev(time.Second, &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, ResponseTimeMs: 800}))
	if s.HasFirstResponse || s.AgentReplies != 0 || !s.PendingVisitorAt.IsZero() {
		t.Fatalf("%+v", s)
	}
}

func TestNoResponse(t *testing.T) {
	var l log
	hi := l.ev(0, visitor("hi"))
	req := l.ev(time.Minute, &eventv1.HandoffRequested{})
	s, _ := run(machine.State{}, hi, req)
	now := t0.Add(7 * time.Minute)
	s, out, ok := machine.NoResponse(s, now)
	if !ok || s.AwaitingAgent || !s.OperatorNoResponse || len(out.Emit) != 1 {
		t.Fatalf("no response: %v %+v", ok, s)
	}
	onr := out.Emit[0]
	if onr.EventId != machine.NoResponseEventID(req.Envelope.TenantId, req.Envelope.EventId) || onr.CausationId != req.Envelope.EventId ||
		onr.GetOperatorNoResponse().WaitedSeconds != 360 || !onr.GetOperatorNoResponse().HandoffRequestedAt.AsTime().Equal(t0.Add(time.Minute)) {
		t.Fatalf("operator_no_response %v", onr)
	}
	if _, _, ok := machine.NoResponse(s, now); ok {
		t.Fatal("reported twice for one request")
	}
	// An agent joining later still takes over.
	s, _ = run(s, l.ev(8*time.Minute, &eventv1.AgentJoined{AgentId: "ann"}))
	if s.TakeoverAt.IsZero() || !s.OperatorNoResponse {
		t.Fatalf("late join: %+v", s)
	}
	// A new request waits again.
	s, _ = run(s, l.ev(9*time.Minute, &eventv1.HandoffRequested{}))
	if !s.AwaitingAgent {
		t.Fatal("second request not waiting")
	}
	// The first request's operator_no_response read back does not clear the second.
	s, _ = run(s, l.ev(0, onr))
	if !s.AwaitingAgent {
		t.Fatal("read-back of an older no-response cleared the new request")
	}
	if _, _, ok := machine.NoResponse(machine.State{Status: machine.StatusEnded, AwaitingAgent: true}, now); ok {
		t.Fatal("no-response on an ended conversation")
	}
}

func TestEngagementRules(t *testing.T) {
	tests := []struct {
		visitor, flows, goals uint32
		want                  eventv1.Engagement
	}{
		{0, 0, 0, eventv1.Engagement_ENGAGEMENT_NO_REPLY},
		{1, 0, 0, eventv1.Engagement_ENGAGEMENT_ENGAGED},
		{5, 0, 0, eventv1.Engagement_ENGAGEMENT_ENGAGED},
		{0, 1, 0, eventv1.Engagement_ENGAGEMENT_COMPLETED},
		{3, 2, 0, eventv1.Engagement_ENGAGEMENT_COMPLETED},
		{0, 0, 1, eventv1.Engagement_ENGAGEMENT_GOAL_COMPLETED},
		{4, 1, 2, eventv1.Engagement_ENGAGEMENT_GOAL_COMPLETED},
	}
	for _, tt := range tests {
		s := machine.State{VisitorMessages: tt.visitor, FlowsCompleted: tt.flows, GoalsReached: tt.goals}
		if got := machine.ClassifyEngagement(s); got != tt.want {
			t.Errorf("visitor=%d flows=%d goals=%d: got %v want %v", tt.visitor, tt.flows, tt.goals, got, tt.want)
		}
	}
}

func TestEngagementFromEvents(t *testing.T) {
	tests := []struct {
		name   string
		events []any
		want   eventv1.Engagement
	}{
		{"bot talked alone", []any{&eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT}}, eventv1.Engagement_ENGAGEMENT_NO_REPLY},
		{"visitor replied", []any{&eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT}, visitor("yes")}, eventv1.Engagement_ENGAGEMENT_ENGAGED},
		{"flow completed", []any{visitor("yes"), &eventv1.FlowCompleted{FlowId: "f"}}, eventv1.Engagement_ENGAGEMENT_COMPLETED},
		{"goal", []any{&eventv1.FlowCompleted{FlowId: "f"}, &eventv1.GoalReached{GoalId: "g"}}, eventv1.Engagement_ENGAGEMENT_GOAL_COMPLETED},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l log
			s := machine.State{}
			for i, p := range tt.events {
				s, _ = run(s, l.ev(time.Duration(i)*time.Second, p))
			}
			s, outs := run(s, l.ev(time.Minute, closed(eventv1.Actor_ACTOR_BOT)))
			if s.Engagement != tt.want || emitted(outs)[1].GetEngagementClassified().Engagement != tt.want {
				t.Fatalf("got %v want %v", s.Engagement, tt.want)
			}
		})
	}
}

func TestResolvedRule(t *testing.T) {
	took := t0
	tests := []struct {
		name string
		s    machine.State
		want bool
	}{
		{"nothing happened", machine.State{VisitorMessages: 3}, false},
		{"goal", machine.State{GoalsReached: 1}, true},
		{"flow completed", machine.State{FlowsCompleted: 1}, true},
		{"goal but operator never answered", machine.State{GoalsReached: 1, OperatorNoResponse: true}, false},
		{"agent took over and closed", machine.State{TakeoverAt: took, EndReason: eventv1.EndReason_END_REASON_AGENT_CLOSED}, true},
		{"agent took over, visitor left", machine.State{TakeoverAt: took, EndReason: eventv1.EndReason_END_REASON_VISITOR_CLOSED}, false},
		{"agent closed without takeover", machine.State{EndReason: eventv1.EndReason_END_REASON_AGENT_CLOSED}, false},
		{"stale with a goal", machine.State{GoalsReached: 2, EndReason: eventv1.EndReason_END_REASON_STALE_TIMEOUT}, true},
	}
	for _, tt := range tests {
		if got := machine.IsResolved(tt.s); got != tt.want {
			t.Errorf("%s: got %v want %v", tt.name, got, tt.want)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, k := range eventbus.Kinds() {
		c := machine.Classify(k)
		switch k {
		case "conversation_ended", "engagement_classified", "operator_no_response", "late_event_recorded":
			if c != machine.ClassLifecycle {
				t.Errorf("%s: %v", k, c)
			}
		case "tag_applied", "tag_removed", "label_added", "label_removed", "flagged", "unflagged", "issue_detected":
			if c != machine.ClassService {
				t.Errorf("%s: %v", k, c)
			}
		case "marker_added", "location_resolved":
			if c != machine.ClassAnnotation {
				t.Errorf("%s: %v", k, c)
			}
		default:
			if c != machine.ClassActivity {
				t.Errorf("%s: %v, want activity", k, c)
			}
		}
	}
}

// TestLogOrderDecides is the rebuild guarantee in miniature: a conversation
// ended by a sweep while more events were on their way ends up in the same
// state as one rebuilt by replaying the log, where the end sits after those
// events.
func TestLogOrderDecides(t *testing.T) {
	var l log
	// Live: events, then the sweeper ends the conversation.
	before := []machine.Event{
		l.ev(0, visitor("hi")),
		l.ev(time.Minute, &eventv1.HandoffRequested{}),
	}
	live, _ := run(machine.State{}, before...)
	sweepAt := t0.Add(25 * time.Hour)
	live, out, _ := machine.End(live, machine.EndCommand{Reason: eventv1.EndReason_END_REASON_STALE_TIMEOUT, At: sweepAt}, sweepAt)
	// Events appended before the sweep's conversation_ended reached the log.
	between := []machine.Event{
		l.ev(25*time.Hour, visitor("wait")),
		l.ev(25*time.Hour+time.Second, &eventv1.HandoffRequested{}),
		l.ev(25*time.Hour+2*time.Second, closed(eventv1.Actor_ACTOR_VISITOR)),
	}
	ended := l.ev(0, out.Emit[0])
	classified := l.ev(0, out.Emit[1])
	after := []machine.Event{l.ev(26*time.Hour, visitor("late")), l.ev(26*time.Hour, &eventv1.TagApplied{Tag: "x"})}

	live, _ = run(live, between...)
	live, _ = run(live, ended, classified)
	live, _ = run(live, after...)

	// Rebuild: the same log from an empty state. The close sits before a
	// conversation_ended the log already holds.
	var replay machine.State
	replay, _ = run(replay, before...)
	between[2].EndedLater = true
	replay, outs := run(replay, between...)
	if len(emitted(outs)) != 0 {
		t.Fatalf("replay emitted %v", kinds(emitted(outs)))
	}
	replay, _ = run(replay, ended, classified)
	replay, _ = run(replay, after...)
	if !reflect.DeepEqual(live, replay) {
		t.Fatalf("live and replayed state differ:\nlive   %+v\nreplay %+v", live, replay)
	}
	if live.EndReason != eventv1.EndReason_END_REASON_STALE_TIMEOUT || live.LateEvents != 1 || live.VisitorMessages != 2 || live.AwaitingAgent {
		t.Fatalf("state %+v", live)
	}
}

func TestTheLoggedEndWins(t *testing.T) {
	var l log
	s, _ := run(machine.State{}, l.ev(0, visitor("hi")))
	// This process ended it by a sweep, but the log already ended it
	// differently (e.g. a sweep during an earlier life of the database).
	sweepAt := t0.Add(40 * time.Hour)
	s, _, _ = machine.End(s, machine.EndCommand{Reason: eventv1.EndReason_END_REASON_STALE_TIMEOUT, At: sweepAt}, sweepAt)
	logged := &eventv1.Envelope{
		EventId: machine.EndedEventID("acme", "c1"), TenantId: "acme", ConversationId: "c1", OccurredAt: timestamppb.New(t0.Add(time.Hour)),
		Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_ADMINISTRATOR, EndedBy: "root"}},
	}
	s, outs := run(s, l.ev(0, logged))
	if s.EndReason != eventv1.EndReason_END_REASON_ADMINISTRATOR || s.EndedBy != "root" || !s.EndedAt.Equal(t0.Add(time.Hour)) || s.EndSeq != 2 || len(emitted(outs)) != 0 {
		t.Fatalf("state %+v", s)
	}
}

// TestDerivedIDsDifferAcrossTenants runs one history, with the same event
// ids (clients choose them), for two tenants: every event lifecycle derives
// (operator_no_response, conversation_ended, engagement_classified,
// late_event_recorded) gets a different id per tenant.
func TestDerivedIDsDifferAcrossTenants(t *testing.T) {
	derived := func(tenant string) map[string]string {
		var l log
		evs := []machine.Event{
			l.ev(0, visitor("hi")),
			l.ev(time.Minute, &eventv1.HandoffRequested{}),
		}
		for _, ev := range evs {
			ev.Envelope.TenantId = tenant
		}
		s, _ := run(machine.State{}, evs...)
		s, out, ok := machine.NoResponse(s, t0.Add(10*time.Minute))
		if !ok {
			t.Fatalf("%s: no operator_no_response", tenant)
		}
		ids := map[string]string{}
		for _, e := range out.Emit {
			ids[e.Kind] = e.EventId
		}
		end := l.ev(11*time.Minute, closed(eventv1.Actor_ACTOR_VISITOR))
		late := l.ev(12*time.Minute, visitor("still there?"))
		end.Envelope.TenantId, late.Envelope.TenantId = tenant, tenant
		_, outs := run(s, end, late)
		for _, e := range emitted(outs) {
			ids[e.Kind] = e.EventId
		}
		return ids
	}
	a, b := derived("tenant-a"), derived("tenant-b")
	for _, kind := range []string{"operator_no_response", "conversation_ended", "engagement_classified", "late_event_recorded"} {
		if a[kind] == "" || b[kind] == "" {
			t.Fatalf("%s not derived: %v %v", kind, a, b)
		}
		if a[kind] == b[kind] {
			t.Errorf("%s: both tenants derive id %s from the same cause", kind, a[kind])
		}
	}
}
