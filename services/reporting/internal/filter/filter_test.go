package filter_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/filter"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// 2026-11-21 10:30 in Berlin (UTC+1).
var now = time.Date(2026, 11, 21, 9, 30, 0, 0, time.UTC)

func TestPresetsInTimeZone(t *testing.T) {
	berlin, _ := time.LoadLocation("Europe/Berlin")
	midnight := time.Date(2026, 11, 21, 0, 0, 0, 0, berlin)
	cases := []struct {
		preset   string
		from, to time.Time
	}{
		{"", now.Add(-24 * time.Hour), time.Time{}},
		{"last_24_hours", now.Add(-24 * time.Hour), time.Time{}},
		{"today", midnight, time.Time{}},
		{"yesterday", midnight.AddDate(0, 0, -1), midnight},
		{"last_7_days", midnight.AddDate(0, 0, -6), time.Time{}},
		{"last_30_days", midnight.AddDate(0, 0, -29), time.Time{}},
		{"last_60_days", midnight.AddDate(0, 0, -59), time.Time{}},
		{"all_time", time.Time{}, time.Time{}},
	}
	for _, c := range cases {
		from, to, _, v := filter.TimeBounds(&reportingv1.TimeRange{Preset: c.preset, TimeZone: "Europe/Berlin"}, now, "UTC")
		if v != nil || !from.Equal(c.from) || !to.Equal(c.to) {
			t.Errorf("%q: got [%v, %v) %v; want [%v, %v)", c.preset, from, to, v, c.from.UTC(), c.to.UTC())
		}
	}
	// The tenant's zone applies when the filter names none.
	from, _, _, _ := filter.TimeBounds(&reportingv1.TimeRange{Preset: "today"}, now, "America/New_York")
	if want := time.Date(2026, 11, 21, 5, 0, 0, 0, time.UTC); !from.Equal(want) {
		t.Errorf("tenant zone: got %v want %v", from, want)
	}
	// Custom ranges.
	from, to, _, v := filter.TimeBounds(&reportingv1.TimeRange{Preset: "custom", From: timestamppb.New(now.Add(-time.Hour)), To: timestamppb.New(now)}, now, "")
	if v != nil || !from.Equal(now.Add(-time.Hour)) || !to.Equal(now) {
		t.Errorf("custom: %v %v %v", from, to, v)
	}
}

func TestEveryFilterBuildsItsCondition(t *testing.T) {
	yes := proto.Bool(true)
	no := proto.Bool(false)
	cases := []struct {
		f    *reportingv1.Filter
		want string
	}{
		{&reportingv1.Filter{Statuses: []string{"active", "no_operator_response"}}, "(status = 'active' OR operator_no_response = 1)"},
		{&reportingv1.Filter{BotIds: []string{"shop"}}, "has(?, bot_id)"},
		{&reportingv1.Filter{Channels: []eventv1.Channel{eventv1.Channel_CHANNEL_WHATSAPP}}, "has(?, channel)"},
		{&reportingv1.Filter{Platforms: []eventv1.Platform{eventv1.Platform_PLATFORM_APP}}, "has(?, platform)"},
		{&reportingv1.Filter{Types: []eventv1.ConversationType{eventv1.ConversationType_CONVERSATION_TYPE_TEST}}, "has(?, type)"},
		{&reportingv1.Filter{Engagements: []eventv1.Engagement{eventv1.Engagement_ENGAGEMENT_ENGAGED}}, "has(?, if(engagement != '', engagement, multiIf(notEmpty(goals), 'goal_completed'"},
		{&reportingv1.Filter{EndReasons: []eventv1.EndReason{eventv1.EndReason_END_REASON_STALE_TIMEOUT}}, "has(?, end_reason)"},
		{&reportingv1.Filter{Goals: []string{"purchase"}}, "hasAny(goals, ?)"},
		{&reportingv1.Filter{TakenOver: yes}, "taken_over = ?"},
		{&reportingv1.Filter{HasLead: yes}, "leads > 0"},
		{&reportingv1.Filter{HasLead: no}, "leads = 0"},
		{&reportingv1.Filter{Tags: []string{"unidentified-response"}}, "hasAny(tags, ?)"},
		{&reportingv1.Filter{Labels: []string{"refund"}}, "hasAny(labels, ?)"},
		{&reportingv1.Filter{Flagged: yes}, "flagged = ?"},
		{&reportingv1.Filter{FlowId: "checkout"}, "has(flows_started, ?)"},
		{&reportingv1.Filter{FlowId: "checkout", FlowStepId: "pay"}, "has(flow_steps, ?)"},
		{&reportingv1.Filter{FlowId: "checkout", DroppedOff: true}, "arrayExists(x -> startsWith(x, ?), flow_drops)"},
		{&reportingv1.Filter{NodeId: "n1"}, "hasAny(nodes, ?)"},
		{&reportingv1.Filter{NodeIds: []string{"n1", "n2"}, NodeId: "n3"}, "hasAny(nodes, ?)"},
		{&reportingv1.Filter{Resolved: yes}, "resolved = ?"},
		{&reportingv1.Filter{AgentPresent: yes}, "agent_present = ?"},
		{&reportingv1.Filter{HasGoal: yes}, "notEmpty(goals)"},
		{&reportingv1.Filter{HasGoal: no}, "empty(goals)"},
		{&reportingv1.Filter{VisitorToken: "tok-1"}, "visitor_token = ?"},
		{&reportingv1.Filter{Country: "de"}, "country = ?"},
		{&reportingv1.Filter{Region: "Bavaria"}, "region = ?"},
		{&reportingv1.Filter{City: "Munich"}, "city = ?"},
		{&reportingv1.Filter{AgentId: "ann"}, "has(agents, ?)"},
		{&reportingv1.Filter{Text: "refund"}, "started_at_us IN (SELECT started_at_us FROM message_tokens WHERE tenant_id = ? AND token = ? AND day >= toDate(?) AND started_at_us >= ?) AND conversation_id IN (SELECT conversation_id FROM message_tokens WHERE tenant_id = ? AND token = ? AND day >= toDate(?) AND started_at_us >= ?)"},
		{&reportingv1.Filter{Text: "Refund, ORDER refund"}, "token = ? AND day >= toDate(?) AND started_at_us >= ? AND conversation_id IN (SELECT conversation_id FROM message_tokens WHERE tenant_id = ? AND token = ? AND day >= toDate(?) AND started_at_us >= ?)"},
	}
	for _, c := range cases {
		w, v := filter.Build("acme", c.f, now, "UTC")
		if v != nil {
			t.Fatalf("%v: %v", c.f, v)
		}
		if !strings.Contains(w.SQL, c.want) || !strings.HasPrefix(w.SQL, "tenant_id = ?") || strings.Count(w.SQL, "?") != len(w.Args) {
			t.Errorf("%v: got %q (%d args)", c.f, w.SQL, len(w.Args))
		}
		for _, a := range w.Args {
			if s, ok := a.(string); ok && strings.Contains(w.SQL, s) && s != "" && len(s) > 3 {
				t.Errorf("value %q leaked into SQL text %q", s, w.SQL)
			}
		}
	}
}

// The text search hands the normalised words to the index as parameters:
// the same tokens the projector writes.
func TestTextSearchUsesTheNormalisedWords(t *testing.T) {
	w, v := filter.Build("acme", &reportingv1.Filter{Text: "REFUND, order refund!", TimeRange: &reportingv1.TimeRange{Preset: "yesterday"}}, now, "UTC")
	if v != nil {
		t.Fatal(v)
	}
	from, to := w.From.Format("2006-01-02"), w.To.Format("2006-01-02")
	bounds := []any{from, w.From.UnixMicro(), to, w.To.UnixMicro()}
	// The longest word's starts narrow the key; then the words nest, longest
	// innermost (the outer lookup is the shorter word's).
	var want []any
	for _, word := range []string{"refund", "order", "refund"} {
		want = append(append(want, "acme", word), bounds...)
	}
	if got := w.Args[len(w.Args)-len(want):]; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("text args %v, want %v", got, want)
	}
}

func TestNilFilterIsTheDefaultView(t *testing.T) {
	w, v := filter.Build("acme", nil, now, "UTC")
	if v != nil || !w.From.Equal(now.Add(-24*time.Hour)) {
		t.Fatalf("nil filter: %v %v", w, v)
	}
}

func TestViolationsNameTheField(t *testing.T) {
	cases := []struct {
		f     *reportingv1.Filter
		field string
	}{
		{&reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "fortnight"}}, "filter.time_range.preset"},
		{&reportingv1.Filter{TimeRange: &reportingv1.TimeRange{TimeZone: "Mars/Olympus"}}, "filter.time_range.time_zone"},
		{&reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "custom"}}, "filter.time_range.from"},
		{&reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "custom", From: timestamppb.New(now), To: timestamppb.New(now)}}, "filter.time_range.to"},
		{&reportingv1.Filter{Statuses: []string{"active", "sleeping"}}, "filter.statuses[1]"},
		{&reportingv1.Filter{Channels: []eventv1.Channel{0}}, "filter.channels[0]"},
		{&reportingv1.Filter{Platforms: []eventv1.Platform{42}}, "filter.platforms[0]"},
		{&reportingv1.Filter{BotIds: []string{""}}, "filter.bot_ids[0]"},
		{&reportingv1.Filter{FlowStepId: "pay"}, "filter.flow_step_id"},
		{&reportingv1.Filter{DroppedOff: true}, "filter.dropped_off"},
		{&reportingv1.Filter{Text: strings.Repeat("x", 201)}, "filter.text"},
		{&reportingv1.Filter{City: strings.Repeat("x", 300)}, "filter.city"},
		{&reportingv1.Filter{Text: "?! ..."}, "filter.text"},
		{&reportingv1.Filter{NodeIds: []string{"a", ""}}, "filter.node_ids[1]"},
		{&reportingv1.Filter{VisitorToken: strings.Repeat("x", 300)}, "filter.visitor_token"},
	}
	for _, c := range cases {
		_, v := filter.Build("acme", c.f, now, "UTC")
		if v == nil || v.Field != c.field {
			t.Errorf("%v: got violation %v, want on %s", c.f, v, c.field)
		}
	}
}

// FuzzBuild feeds arbitrary strings into the filter: Build never panics, and
// every value reaches the query only as a parameter.
func FuzzBuild(f *testing.F) {
	f.Add("today", "Europe/Berlin", "refund", "shop", "checkout", "pay", "DE")
	f.Add("custom", "", "'; DROP TABLE conversations; --", "a'b", "x/y", "", "")
	f.Fuzz(func(t *testing.T, preset, tz, text, bot, flow, step, country string) {
		fl := &reportingv1.Filter{
			TimeRange: &reportingv1.TimeRange{Preset: preset, TimeZone: tz},
			Text:      text, BotIds: []string{bot}, FlowId: flow, FlowStepId: step, Country: country,
		}
		w, v := filter.Build("acme", fl, now, "UTC")
		if v != nil {
			if v.Field == "" {
				t.Fatal("violation without field")
			}
			return
		}
		if strings.Count(w.SQL, "?") != len(w.Args) {
			t.Fatalf("placeholders %d args %d", strings.Count(w.SQL, "?"), len(w.Args))
		}
		for _, frag := range []string{text, bot, country} {
			if len(frag) > 12 && strings.Contains(w.SQL, frag) {
				t.Fatalf("user input %q in SQL %q", frag, w.SQL)
			}
		}
	})
}

// What ClickHouse cannot hold or run is refused up front, naming the field.
func TestBoundsAClickHouseQueryCanHold(t *testing.T) {
	at := func(y int) *timestamppb.Timestamp { return timestamppb.New(time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)) }
	value := strings.Repeat("x", filter.MaxValueLen)
	values := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = value
		}
		return out
	}
	perField := filter.MaxTotalBytes / filter.MaxValueLen // values of one field within the total
	cases := []struct {
		name, field string
		f           *reportingv1.Filter
	}{
		{"Local", "filter.time_range.time_zone", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "today", TimeZone: "Local"}}},
		{"unknown zone", "filter.time_range.time_zone", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "today", TimeZone: "Nowhere/Else"}}},
		{"from 1969", "filter.time_range.from", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "custom", From: at(1969)}}},
		{"from 2106", "filter.time_range.from", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "custom", From: at(2106)}}},
		{"to 2107", "filter.time_range.to", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "custom", From: at(2000), To: at(2107)}}},
		{"values over the total", "filter", &reportingv1.Filter{Tags: values(perField), Labels: values(1)}},
	}
	for _, c := range cases {
		_, v := filter.Build("acme", c.f, now, "UTC")
		if v == nil || v.Field != c.field {
			t.Errorf("%s: %v, want a violation of %s", c.name, v, c.field)
		}
	}
	for name, f := range map[string]*reportingv1.Filter{
		"widest range":    {TimeRange: &reportingv1.TimeRange{Preset: "custom", From: at(1970), To: at(2106)}},
		"values at total": {Tags: values(perField)},
	} {
		if _, v := filter.Build("acme", f, now, "UTC"); v != nil {
			t.Errorf("%s: %v", name, v)
		}
	}
}
