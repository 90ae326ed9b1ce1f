package projector

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/services/reporting/internal/convstate"
)

// cell returns row i of a column as a value.
func cell(col any, i int) any { return reflect.ValueOf(col).Index(i).Interface() }

func TestConversationColumnsMatchValues(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	full := &convstate.State{
		TenantID: "acme", ConversationID: "c1", StartedAt: at, LastActivityAt: at.Add(time.Second), EndedAt: at.Add(2 * time.Second),
		Status: "ended", EndReason: "visitor_closed", EndedBy: "ann", BotID: "shop", Channel: "web_widget", Platform: "desktop", Type: "live",
		DeviceType: "desktop", VisitorToken: "v", VisitorName: "Otter", Locale: "de", Country: "DE", Region: "BE", City: "Berlin",
		StartPageURL: "https://x/", Referrer: "https://r/", PageURLs: []string{"https://x/"}, Variables: map[string]string{"b": "2", "a": "1"},
		VisitorMessages: 1, BotMessages: 2, AgentMessages: 3, SystemMessages: 4, UnidentifiedCount: 5, PaidMessages: 6,
		LastMessageText: "bye", LastMessageRole: "visitor", LastMessageAt: at.Add(3 * time.Second), Intents: []string{"i"}, Nodes: []string{"n"},
		FlowsStarted: []string{"f"}, FlowsCompleted: []string{"fc"}, FlowDrops: []string{"f/s/n"}, FlowSteps: []string{"f/s"}, Goals: []string{"g"},
		GoalValue: 7, Leads: 8, Markers: []string{"m"}, HandoffRequested: true, HandoffAt: at.Add(4 * time.Second), TakenOver: true,
		TakeoverAt: at.Add(5 * time.Second), Agents: []string{"ann"}, AgentName: "Ann", AgentsPresent: []string{"ann"}, OperatorNoResponse: true, FirstResponseMS: 9,
		ResponseMSSum: 10, ResponseCount: 11, MaxResponseMS: 12, Engagement: "engaged", Resolved: true, Tags: []string{"t"}, Labels: []string{"l"},
		Flagged: true, CostMicros: 13, Currency: "EUR", InputTokens: 14, OutputTokens: 15, EventCount: 16, LastSeq: 17,
	}
	var c convCols
	for _, s := range []*convstate.State{full, convstate.New("acme", "c2")} {
		if err := c.add(s); err != nil {
			t.Fatal(err)
		}
	}
	cols := c.columns()
	names := strings.Split(ConversationColumns, ",")
	if len(cols) != len(names) {
		t.Fatalf("%d columns, %d names", len(cols), len(names))
	}
	for row, s := range []*convstate.State{full, convstate.New("acme", "c2")} {
		vals := ConversationValues(s)
		for i, name := range names {
			got, want := cell(cols[i], row), vals[i]
			if strings.TrimSpace(name) == "status" {
				want = map[string]int8{"active": 1, "ended": 2}[want.(string)]
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("row %d column %s: %#v, want %#v", row, strings.TrimSpace(name), got, want)
			}
		}
	}
	// Reused for the next batch: empty, nothing of the batch kept.
	truncate(&c)
	for i, col := range c.columns() {
		if v := reflect.ValueOf(col); v.Len() != 0 || v.Cap() == 0 {
			t.Fatalf("column %d after truncate: len %d cap %d", i, v.Len(), v.Cap())
		}
		if v := reflect.ValueOf(col); !reflect.DeepEqual(v.Slice(0, 1).Index(0).Interface(), reflect.Zero(v.Type().Elem()).Interface()) {
			t.Fatalf("column %d keeps data after truncate", i)
		}
	}
	if err := c.add(&convstate.State{Status: "bogus"}); err == nil {
		t.Fatal("unknown status accepted")
	}
}

func TestEventAndMessageColumnsMatchRows(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	e := EventRow{TenantID: "t", ConversationID: "c", EventID: "e", Kind: "k", StreamSeq: 1, OccurredAt: at, OccurredAtUS: 2, RecordedAt: at.Add(time.Second),
		Producer: "p", CausationID: "ca", CorrelationID: "co", TraceID: "tr", PayloadJSON: "{}"}
	var ec eventCols
	ec.add(&e)
	want := []any{e.TenantID, e.ConversationID, e.EventID, e.Kind, e.StreamSeq, e.OccurredAt, e.OccurredAtUS, e.RecordedAt, e.Producer, e.CausationID, e.CorrelationID, e.TraceID, e.PayloadJSON}
	checkColumns(t, eventColumns, ec.columns(), want)
	m := MessageRow{TenantID: "t", ConversationID: "c", EventID: "e", MessageID: "m", Role: "agent", Text: "x", Intent: "i", IntentConfidence: 0.5,
		Unidentified: 1, FlowID: "f", NodeID: "n", AgentID: "a", ResponseTimeMS: 3, Paid: 1, OccurredAt: at, OccurredAtUS: 4, RecordedAt: at.Add(time.Second),
		StreamSeq: 5, TraceID: "tr"}
	var mc messageCols
	mc.add(&m)
	want = []any{m.TenantID, m.ConversationID, m.EventID, m.MessageID, int8(3), m.Text, m.Intent, m.IntentConfidence, m.Unidentified, m.FlowID, m.NodeID, m.AgentID,
		m.ResponseTimeMS, m.Paid, m.OccurredAt, m.OccurredAtUS, m.RecordedAt, m.StreamSeq, m.TraceID}
	checkColumns(t, messageColumns, mc.columns(), want)
	for role, v := range map[string]int8{"unspecified": 0, "visitor": 1, "bot": 2, "agent": 3, "system": 4} {
		if roleEnum(role) != v {
			t.Errorf("role %s: %d", role, roleEnum(role))
		}
	}
}

func checkColumns(t *testing.T, names string, cols, want []any) {
	t.Helper()
	if n := len(strings.Split(names, ",")); len(cols) != n || len(want) != n {
		t.Fatalf("%d columns, %d values, %d names", len(cols), len(want), n)
	}
	for i := range cols {
		if got := cell(cols[i], 0); !reflect.DeepEqual(got, want[i]) {
			t.Errorf("column %d: %#v, want %#v", i, got, want[i])
		}
	}
}
