package convrow

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/services/reporting/internal/convstate"
)

// Full is a state with every field of the row set to a distinct value.
func Full() *convstate.State {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	return &convstate.State{
		TenantID: "acme", ConversationID: "c1", StartedAt: at, LastActivityAt: at.Add(time.Second), EndedAt: at.Add(2 * time.Second),
		Status: "ended", EndReason: "visitor_closed", EndedBy: "ann", BotID: "shop", Channel: "web_widget", Platform: "desktop", Type: "live",
		DeviceType: "desktop", VisitorToken: "v", VisitorName: "Otter", Locale: "de", Country: "DE", Region: "BE", City: "Berlin",
		StartPageURL: "https://x/", Referrer: "https://r/", PageURLs: []string{"https://x/"}, Variables: map[string]string{"b": "2", "a": "1"},
		VisitorMessages: 1, BotMessages: 2, AgentMessages: 3, SystemMessages: 4, UnidentifiedCount: 5, PaidMessages: 6,
		LastMessageText: "bye", LastMessageRole: "visitor", LastMessageAt: at.Add(3 * time.Second), Intents: []string{"i"}, Nodes: []string{"n"},
		FlowsStarted: []string{"f"}, FlowsCompleted: []string{"fc"}, FlowDrops: []string{"f/s/n"}, FlowSteps: []string{"f/s"}, Goals: []string{"g"},
		GoalValue: 7, Leads: 8, Markers: []string{"m"}, HandoffRequested: true, HandoffAt: at.Add(4 * time.Second), TakenOver: true,
		TakeoverAt: at.Add(5 * time.Second), Agents: []string{"ann"}, AgentName: "Ann", OperatorNoResponse: true, FirstResponseMS: 9,
		ResponseMSSum: 10, ResponseCount: 11, MaxResponseMS: 12, Engagement: "engaged", Resolved: true, Tags: []string{"t"}, Labels: []string{"l"},
		Flagged: true, CostMicros: 13, Currency: "EUR", InputTokens: 14, OutputTokens: 15, EventCount: 16, LastSeq: 17,
		VariableSources: map[string]string{"b": "api"}, DebugEnabled: true, BotResponseMSSum: 18, BotResponseCount: 19,
		Usage: []convstate.Usage{{Model: "m1", Currency: "EUR", CostMicros: 13, InputTokens: 14, OutputTokens: 15}, {Model: "m2", Currency: "EUR"}},
	}
}

func TestBatchColumnsMatchValues(t *testing.T) {
	states := []*convstate.State{Full(), convstate.New("acme", "c2")}
	b := NewBatch()
	for _, s := range states {
		if err := b.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	cols := b.Columns()
	names := strings.Split(Names(), ", ")
	if len(cols) != len(names) || b.Len() != 2 {
		t.Fatalf("%d columns, %d names, %d rows", len(cols), len(names), b.Len())
	}
	for row, s := range states {
		vals := Values(s)
		for i, name := range names {
			if got := reflect.ValueOf(cols[i]).Index(row).Interface(); !reflect.DeepEqual(got, vals[i]) {
				t.Errorf("row %d column %s: %#v, want %#v", row, name, got, vals[i])
			}
		}
	}
	// The full state's row, spelled out independently of the accessors.
	want := map[string]any{"status": int8(2), "variable_keys": []string{"a", "b"}, "variable_values": []string{"1", "2"}, "message_count": uint32(10),
		"started_at_us": Full().StartedAt.UnixMicro(), "flagged": uint8(1), "version": uint64(17), "ended_at": Full().EndedAt, "tags": []string{"t"},
		"variable_sources": []string{"", "api"}, "usage_models": []string{"m1", "m2"}, "usage_cost_micros": []int64{13, 0}, "debug_enabled": uint8(1)}
	for i, name := range names {
		if w, ok := want[name]; ok && !reflect.DeepEqual(Values(Full())[i], w) {
			t.Errorf("column %s: %#v, want %#v", name, Values(Full())[i], w)
		}
	}
	empty := Values(convstate.New("acme", "c2"))
	for i, name := range names {
		if strings.HasSuffix(name, "_at") && name != "started_at" && !empty[i].(time.Time).Equal(time.Unix(0, 0)) {
			t.Errorf("column %s of an empty state: %v, want the zero DateTime", name, empty[i])
		}
	}
	// Reused for the next batch: empty, nothing of the batch kept.
	b.Reset()
	for i, col := range b.Columns() {
		v := reflect.ValueOf(col)
		if v.Len() != 0 || v.Cap() == 0 {
			t.Fatalf("column %s after reset: len %d cap %d", names[i], v.Len(), v.Cap())
		}
		if !reflect.DeepEqual(v.Slice(0, 1).Index(0).Interface(), reflect.Zero(v.Type().Elem()).Interface()) {
			t.Fatalf("column %s keeps data after reset", names[i])
		}
	}
	if err := b.Add(&convstate.State{Status: "bogus"}); err == nil || b.Len() != 0 {
		t.Fatal("unknown status accepted")
	}
}

// docsPath is the analysts' schema documentation.
const docsPath = "../../../../docs/clickhouse.md"

// TestDocsTableMatchesColumns checks the conversations table of
// docs/clickhouse.md: the same columns, in order, with the same types.
func TestDocsTableMatchesColumns(t *testing.T) {
	doc, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	sec := string(doc)
	i := strings.Index(sec, "### `conversations`")
	if i < 0 {
		t.Fatal("no conversations section")
	}
	sec = sec[i+1:]
	if j := strings.Index(sec, "\n#"); j >= 0 {
		sec = sec[:j] // up to the next heading
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9_]+)` \\| ([^|]+) \\|")
	var got []string
	for _, m := range row.FindAllStringSubmatch(sec, -1) {
		got = append(got, m[1]+" "+strings.TrimSpace(m[2]))
	}
	var want []string
	for _, c := range Columns() {
		want = append(want, c.Name+" "+docType(c.Type))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("docs/clickhouse.md conversations table:\n%s\nwant (convrow.Columns):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// docType is how the docs table spells a ClickHouse type.
func docType(t string) string {
	return regexp.MustCompile(`'[a-z_]+'`).ReplaceAllString(t, "`$0`")
}
