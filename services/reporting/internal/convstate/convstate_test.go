package convstate_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func ev(sec int, producer string, p any) *eventv1.Envelope {
	e := &eventv1.Envelope{TenantId: "acme", ConversationId: "c1", OccurredAt: timestamppb.New(t0.Add(time.Duration(sec) * time.Second)), Producer: producer}
	switch v := p.(type) {
	case *eventv1.ConversationStarted:
		e.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: v}
	case *eventv1.MessagePosted:
		e.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: v}
	case *eventv1.PageViewed:
		e.Payload = &eventv1.Envelope_PageViewed{PageViewed: v}
	case *eventv1.VariablesCaptured:
		e.Payload = &eventv1.Envelope_VariablesCaptured{VariablesCaptured: v}
	case *eventv1.FlowStarted:
		e.Payload = &eventv1.Envelope_FlowStarted{FlowStarted: v}
	case *eventv1.FlowDropped:
		e.Payload = &eventv1.Envelope_FlowDropped{FlowDropped: v}
	case *eventv1.FlowCompleted:
		e.Payload = &eventv1.Envelope_FlowCompleted{FlowCompleted: v}
	case *eventv1.GoalReached:
		e.Payload = &eventv1.Envelope_GoalReached{GoalReached: v}
	case *eventv1.LeadCaptured:
		e.Payload = &eventv1.Envelope_LeadCaptured{LeadCaptured: v}
	case *eventv1.UsageRecorded:
		e.Payload = &eventv1.Envelope_UsageRecorded{UsageRecorded: v}
	case *eventv1.HandoffRequested:
		e.Payload = &eventv1.Envelope_HandoffRequested{HandoffRequested: v}
	case *eventv1.AgentJoined:
		e.Payload = &eventv1.Envelope_AgentJoined{AgentJoined: v}
	case *eventv1.ConversationEnded:
		e.Payload = &eventv1.Envelope_ConversationEnded{ConversationEnded: v}
	case *eventv1.EngagementClassified:
		e.Payload = &eventv1.Envelope_EngagementClassified{EngagementClassified: v}
	case *eventv1.TagApplied:
		e.Payload = &eventv1.Envelope_TagApplied{TagApplied: v}
	case *eventv1.TagRemoved:
		e.Payload = &eventv1.Envelope_TagRemoved{TagRemoved: v}
	case *eventv1.LabelAdded:
		e.Payload = &eventv1.Envelope_LabelAdded{LabelAdded: v}
	case *eventv1.Flagged:
		e.Payload = &eventv1.Envelope_Flagged{Flagged: v}
	case *eventv1.Unflagged:
		e.Payload = &eventv1.Envelope_Unflagged{Unflagged: v}
	case *eventv1.LocationResolved:
		e.Payload = &eventv1.Envelope_LocationResolved{LocationResolved: v}
	default:
		panic("unknown payload")
	}
	return e
}

func conversation() []*eventv1.Envelope {
	return []*eventv1.Envelope{
		ev(0, "ingest", &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hi"}), // first event opens it
		ev(1, "ingest", &eventv1.ConversationStarted{BotId: "shop", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET, Platform: eventv1.Platform_PLATFORM_MOBILE_WEB,
			Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE, Visitor: &eventv1.Visitor{Token: "v1", DisplayName: "Gentle Otter 52"},
			Location: &eventv1.Location{Country: "DE", City: "Berlin"}, PageUrl: "https://shop.example/", Variables: map[string]string{"plan": "free", "topic": "billing"}, DebugEnabled: true}),
		ev(2, "ingest", &eventv1.PageViewed{Url: "https://shop.example/cart"}),
		ev(3, "ingest", &eventv1.VariablesCaptured{Variables: map[string]string{"plan": "pro", "email": "a@b.c"}, Source: eventv1.VariableSource_VARIABLE_SOURCE_EXTRACTED}),
		ev(4, "ingest", &eventv1.FlowStarted{FlowId: "checkout"}),
		ev(5, "ingest", &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "Sorry?", Unidentified: true, NodeId: "n1", ResponseTimeMs: 800, Intent: &eventv1.Intent{Name: "fallback"}}),
		ev(6, "ingest", &eventv1.FlowDropped{FlowId: "checkout", StepId: "pay", NodeId: "n2"}),
		ev(7, "ingest", &eventv1.HandoffRequested{}),
		ev(8, "ingest", &eventv1.AgentJoined{AgentId: "ann", AgentName: "Ann"}),
		ev(9, "ingest", &eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, Text: "Hello, Ann here", ResponseTimeMs: 4000, AgentId: "ann"}),
		ev(10, "ingest", &eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, Text: "Done", ResponseTimeMs: 2000, AgentId: "ann"}),
		ev(11, "ingest", &eventv1.GoalReached{GoalId: "purchase", ValueMicros: 5_000_000}),
		ev(11, "ingest", &eventv1.GoalReached{GoalId: "purchase", ValueMicros: 5_000_000}),
		ev(12, "ingest", &eventv1.LeadCaptured{Email: "a@b.c"}),
		ev(13, "ingest", &eventv1.UsageRecorded{InputTokens: 100, OutputTokens: 50, CostMicros: 1200, PaidMessages: 2}),
		ev(14, "tagging", &eventv1.TagApplied{Tag: "unidentified-response"}),
		ev(14, "tagging", &eventv1.TagApplied{Tag: "vip"}),
		ev(15, "tagging", &eventv1.TagRemoved{Tag: "vip"}),
		ev(15, "tagging", &eventv1.LabelAdded{Label: "refund"}),
		ev(16, "tagging", &eventv1.Flagged{}),
		ev(20, "lifecycle", &eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_AGENT_CLOSED, EndedBy: "ann"}),
		ev(20, "lifecycle", &eventv1.EngagementClassified{Engagement: eventv1.Engagement_ENGAGEMENT_GOAL_COMPLETED, Resolved: true,
			FirstResponseMs: proto.Uint32(1000), AgentReplies: 1, AgentResponseMsSum: 2500}),
		ev(30, "ingest", &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "late"}), // after the end
	}
}

func fold(envs []*eventv1.Envelope) *convstate.State {
	s := convstate.New("acme", "c1")
	for i, e := range envs {
		s.Apply(e, uint64(i+1))
	}
	return s
}

func TestFold(t *testing.T) {
	s := fold(conversation())
	checks := []struct {
		name      string
		got, want any
	}{
		{"started at first event", s.StartedAt, t0},
		{"last activity ignores the late message", s.LastActivityAt, t0.Add(13 * time.Second)},
		{"status", s.Status, "ended"},
		{"end reason", s.EndReason, "agent_closed"},
		{"ended at", s.EndedAt, t0.Add(20 * time.Second)},
		{"bot", s.BotID, "shop"},
		{"channel", s.Channel, "web_widget"},
		{"platform", s.Platform, "mobile_web"},
		{"type", s.Type, "live"},
		{"visitor name", s.VisitorName, "Gentle Otter 52"},
		{"location", s.Country + "/" + s.City, "DE/Berlin"},
		{"pages", s.PageURLs, []string{"https://shop.example/", "https://shop.example/cart"}},
		{"visitor messages (late one not counted)", s.VisitorMessages, uint32(1)},
		{"bot messages", s.BotMessages, uint32(1)},
		{"agent messages", s.AgentMessages, uint32(2)},
		{"unidentified", s.UnidentifiedCount, uint32(1)},
		{"drop-off", s.FlowDrops, []string{"checkout/pay/n2"}},
		{"nodes", s.Nodes, []string{"n1", "n2"}},
		{"takeover", s.TakenOver && s.TakeoverAt.Equal(t0.Add(8*time.Second)), true},
		{"agents", s.Agents, []string{"ann"}},
		{"first response: lifecycle's, not the client's", s.FirstResponseMS, uint32(1000)},
		{"agent replies: lifecycle's", s.ResponseMSSum*10 + uint64(s.ResponseCount), uint64(25001)},
		{"bot latency: the client's response_time_ms of bot messages", s.BotResponseMSSum*10 + uint64(s.BotResponseCount), uint64(8001)},
		{"largest client response time", s.MaxResponseMS, uint32(4000)},
		{"variables: later capture wins", s.Variables, map[string]string{"plan": "pro", "email": "a@b.c", "topic": "billing"}},
		{"variable sources", s.VariableSources, map[string]string{"plan": "extracted", "email": "extracted", "topic": "pre_chat_form"}},
		{"debug enabled", s.DebugEnabled, true},
		{"usage line", s.Usage, []convstate.Usage{{Currency: "USD", CostMicros: 1200, InputTokens: 100, OutputTokens: 50}}},
		{"currency", s.Currency, "USD"},
		{"goal counted once", s.Goals, []string{"purchase"}},
		{"goal value once", s.GoalValue, int64(5_000_000)},
		{"leads", s.Leads, uint32(1)},
		{"cost", s.CostMicros, int64(1200)},
		{"paid", s.PaidMessages, uint32(2)},
		{"tags", s.Tags, []string{"unidentified-response"}},
		{"labels", s.Labels, []string{"refund"}},
		{"flagged", s.Flagged, true},
		{"engagement", s.Engagement, "goal_completed"},
		{"resolved", s.Resolved, true},
		{"last message", s.LastMessageText, "Done"},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestRedeliveryChangesNothing(t *testing.T) {
	envs := conversation()
	s := fold(envs)
	before, _ := json.Marshal(s)
	for i, e := range envs {
		if s.Apply(e, uint64(i+1)) {
			t.Fatalf("event %d applied twice", i)
		}
	}
	after, _ := json.Marshal(s)
	if string(before) != string(after) {
		t.Fatalf("state changed on redelivery:\n%s\n%s", before, after)
	}
	// A state saved and loaded folds on identically.
	var loaded convstate.State
	if err := json.Unmarshal(before, &loaded); err != nil {
		t.Fatal(err)
	}
	extra := ev(40, "tagging", &eventv1.Unflagged{})
	s.Apply(extra, 100)
	loaded.Apply(extra, 100)
	if !reflect.DeepEqual(*s, loaded) {
		t.Fatalf("loaded state diverged:\n%+v\n%+v", *s, loaded)
	}
}

func TestSecondStoredCopyChangesNothing(t *testing.T) {
	envs := conversation()
	for i, e := range envs {
		e.EventId = fmt.Sprintf("event-%d", i)
	}
	s := fold(envs)
	before := *s
	// The same event stored again later (new sequence, same event id).
	if !s.Apply(envs[5], 1000) {
		t.Fatal("a newer sequence must be taken")
	}
	if s.BotMessages != before.BotMessages || s.EventCount != before.EventCount || s.UnidentifiedCount != before.UnidentifiedCount || s.LastSeq != 1000 {
		t.Fatalf("second copy counted: %+v", s)
	}
}

func TestBoundedLists(t *testing.T) {
	s := convstate.New("acme", "c1")
	for i := range 500 {
		s.Apply(ev(i, "ingest", &eventv1.PageViewed{Url: "https://x.example/" + string(rune('a'+i%26)) + string(rune('a'+i/26))}), uint64(i+1))
	}
	if len(s.PageURLs) != convstate.MaxPageURLs || s.EventCount != 500 {
		t.Fatalf("pages %d events %d", len(s.PageURLs), s.EventCount)
	}
}

// Usage is kept per model and currency; the conversation's cost total
// exists only while all usage is in one currency.
func TestUsagePerModelAndCurrency(t *testing.T) {
	s := convstate.New("acme", "c1")
	usage := []*eventv1.UsageRecorded{
		{Model: "gpt-4o", InputTokens: 100, OutputTokens: 10, CostMicros: 3000},
		{Model: "gpt-4o", InputTokens: 50, OutputTokens: 5, CostMicros: 1500, Currency: "USD"},
		{Model: "mini", InputTokens: 7, CostMicros: 20, Currency: "USD"},
	}
	for i, u := range usage {
		e := ev(i, "ingest", u)
		e.EventId = fmt.Sprintf("u%d", i)
		s.Apply(e, uint64(i+1))
	}
	if s.CostMicros != 4520 || s.Currency != "USD" || s.InputTokens != 157 || s.OutputTokens != 15 {
		t.Fatalf("one currency: %d %s %d %d", s.CostMicros, s.Currency, s.InputTokens, s.OutputTokens)
	}
	e := ev(9, "ingest", &eventv1.UsageRecorded{Model: "gpt-4o", InputTokens: 1, CostMicros: 900, Currency: "EUR"})
	e.EventId = "u9"
	s.Apply(e, 10)
	want := []convstate.Usage{
		{Model: "gpt-4o", Currency: "USD", CostMicros: 4500, InputTokens: 150, OutputTokens: 15},
		{Model: "mini", Currency: "USD", CostMicros: 20, InputTokens: 7},
		{Model: "gpt-4o", Currency: "EUR", CostMicros: 900, InputTokens: 1},
	}
	if !reflect.DeepEqual(s.Usage, want) || s.CostMicros != 0 || s.Currency != "" || s.InputTokens != 158 {
		t.Fatalf("mixed currencies: %+v total %d %q", s.Usage, s.CostMicros, s.Currency)
	}
	// A state saved before per-model usage keeps its totals as one line.
	old := &convstate.State{Status: "active", CostMicros: 100, Currency: "EUR", InputTokens: 3}
	e = ev(1, "ingest", &eventv1.UsageRecorded{Model: "m", CostMicros: 5, Currency: "EUR"})
	e.EventId = "x"
	old.Apply(e, 1)
	if old.CostMicros != 105 || old.Currency != "EUR" || len(old.Usage) != 2 || old.Usage[0].CostMicros != 100 {
		t.Fatalf("upgraded: %+v", old)
	}
}
