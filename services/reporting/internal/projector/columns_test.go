package projector

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// cell returns row i of a column as a value.
func cell(col any, i int) any { return reflect.ValueOf(col).Index(i).Interface() }

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
