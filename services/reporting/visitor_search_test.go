package reporting_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// visit is the test's model of one conversation for the tab, visitor,
// catalogue and search tests; expectations are computed from it alone.
type visit struct {
	id, visitor string
	ageHours    int // started this long before now
	vars        map[string]string
	texts       []string // visitor messages
	botNode     string   // a bot message from this node
	visitorNode string   // a visitor message's node
	agents      []string // joined in order
	left        []string // then left, in order
	goal        bool
	flow        bool // checkout flow started ("Checkout"), step at n-pay
	lead        string
	ended       bool
	resolved    bool
}

func visits() []visit {
	return []visit{
		{id: "a", visitor: "vis-1", ageHours: 50, vars: map[string]string{"plan": "free", "city": "Oslo"}, texts: []string{"Where is my ORDER?"}, botNode: "n-welcome", agents: []string{"ann"}},
		{id: "b", visitor: "vis-2", ageHours: 40, agents: []string{"ann"}, left: []string{"ann"}},
		{id: "c", visitor: "vis-3", ageHours: 30, agents: []string{"ann", "bob"}, left: []string{"ann"}},
		{id: "d", visitor: "vis-4", ageHours: 20, agents: []string{"ann"}, ended: true, resolved: true},
		{id: "e", visitor: "vis-1", ageHours: 10, texts: []string{"I want a refund, please"}, botNode: "n-ask", lead: "Eve"},
		{id: "f", visitor: "vis-2", ageHours: 5, texts: []string{"refund my order"}, goal: true, flow: true},
		{id: "g", visitor: "vis-1", ageHours: 2, vars: map[string]string{"plan": "pro"}, texts: []string{"Refunds are slow"}, visitorNode: "n-free", ended: true},
		{id: "h", ageHours: 40 * 24, texts: []string{"refund please"}, ended: true, resolved: true},
	}
}

func (v visit) present() bool {
	if v.ended {
		return false
	}
	in := slices.Clone(v.agents)
	for _, l := range v.left {
		in = slices.DeleteFunc(in, func(a string) bool { return a == l })
	}
	return len(in) > 0
}

// class is the engagement a conversation's facts imply by lifecycle's rule.
func (v visit) class() string {
	switch {
	case v.goal:
		return "goal_completed"
	case len(v.texts) > 0:
		return "engaged"
	case v.ended:
		return "no_reply"
	}
	return ""
}

// words says whether every word of q is a word of some message (case and
// punctuation aside), the documented matching rule.
func (v visit) words(q ...string) bool {
	var all []string
	for _, t := range v.texts {
		all = append(all, strings.FieldsFunc(strings.ToLower(t), func(r rune) bool { return !('a' <= r && r <= 'z') })...)
	}
	for _, w := range q {
		if !slices.Contains(all, w) {
			return false
		}
	}
	return true
}

func (v visit) events(now time.Time) []*eventv1.Envelope {
	at := now.Add(-time.Duration(v.ageHours) * time.Hour).Truncate(time.Second)
	var out []*eventv1.Envelope
	add := func(p func(e *eventv1.Envelope)) {
		e := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: "vs-" + v.id, OccurredAt: timestamppb.New(at), Producer: "ingest"}
		p(e)
		out = append(out, e)
		at = at.Add(time.Second)
	}
	add(func(e *eventv1.Envelope) {
		e.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{BotId: "shop",
			Visitor: &eventv1.Visitor{Token: v.visitor, DisplayName: "Name " + v.id}, Variables: v.vars}}
	})
	if v.botNode != "" {
		add(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "Hi", NodeId: v.botNode}}
		})
	}
	for _, text := range v.texts {
		add(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text, NodeId: v.visitorNode}}
		})
	}
	if v.flow {
		add(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_FlowStarted{FlowStarted: &eventv1.FlowStarted{FlowId: "checkout", FlowName: "Checkout"}}
		})
		add(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_FlowStep{FlowStep: &eventv1.FlowStep{FlowId: "checkout", StepId: "pay", NodeId: "n-pay"}}
		})
	}
	if v.goal {
		add(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_GoalReached{GoalReached: &eventv1.GoalReached{GoalId: "purchase"}}
		})
	}
	if v.lead != "" {
		add(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_LeadCaptured{LeadCaptured: &eventv1.LeadCaptured{Name: v.lead, Email: "eve@example.com"}}
		})
	}
	for _, a := range v.agents {
		add(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_AgentJoined{AgentJoined: &eventv1.AgentJoined{AgentId: a}}
		})
	}
	for _, a := range v.left {
		add(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_AgentLeft{AgentLeft: &eventv1.AgentLeft{AgentId: a}}
		})
	}
	if v.ended {
		add(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_VISITOR_CLOSED}}
		})
		eng := eventv1.Engagement(eventv1.Engagement_value["ENGAGEMENT_"+strings.ToUpper(v.class())])
		add(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_EngagementClassified{EngagementClassified: &eventv1.EngagementClassified{Engagement: eng, Resolved: v.resolved}}
		})
	}
	return out
}

func startVisits(t *testing.T) (*fixture, []visit) {
	f := startEmpty(t)
	vs := visits()
	for _, v := range vs {
		for _, e := range v.events(f.now) {
			if _, err := f.bus.Publish(context.Background(), e); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.waitProjected(t)
	f.waitTotal(t, &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "all_time"}}, uint64(len(vs)))
	return f, vs
}

// want lists the ids of the visits keep selects, as the list returns them
// (newest first).
func want(vs []visit, keep func(visit) bool) []string {
	var out []visit
	for _, v := range vs {
		if keep(v) {
			out = append(out, v)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ageHours < out[j].ageHours })
	ids := []string{}
	for _, v := range out {
		ids = append(ids, "vs-"+v.id)
	}
	return ids
}

// The Conversations window's tabs and the visitor and node filters select
// exactly what the model says, alone and combined.
func TestTabsVisitorAndNodeFilters(t *testing.T) {
	f, vs := startVisits(t)
	yes, no := proto.Bool(true), proto.Bool(false)
	eng := func(e eventv1.Engagement) []eventv1.Engagement { return []eventv1.Engagement{e} }
	cases := []struct {
		name string
		fl   *reportingv1.Filter
		keep func(visit) bool
	}{
		{"resolved", &reportingv1.Filter{Resolved: yes}, func(v visit) bool { return v.resolved }},
		{"not resolved", &reportingv1.Filter{Resolved: no}, func(v visit) bool { return !v.resolved }},
		{"live chatting", &reportingv1.Filter{Statuses: []string{"active"}, AgentPresent: yes}, visit.present},
		{"no agent now", &reportingv1.Filter{AgentPresent: no}, func(v visit) bool { return !v.present() }},
		{"taken over ever", &reportingv1.Filter{TakenOver: yes}, func(v visit) bool { return len(v.agents) > 0 }},
		{"has goal", &reportingv1.Filter{HasGoal: yes}, func(v visit) bool { return v.goal }},
		{"no goal", &reportingv1.Filter{HasGoal: no}, func(v visit) bool { return !v.goal }},
		{"engaged incl. active", &reportingv1.Filter{Engagements: eng(eventv1.Engagement_ENGAGEMENT_ENGAGED)}, func(v visit) bool { return v.class() == "engaged" }},
		{"goal completed while active", &reportingv1.Filter{Statuses: []string{"active"}, Engagements: eng(eventv1.Engagement_ENGAGEMENT_GOAL_COMPLETED)}, func(v visit) bool { return !v.ended && v.class() == "goal_completed" }},
		{"no reply only once ended", &reportingv1.Filter{Engagements: eng(eventv1.Engagement_ENGAGEMENT_NO_REPLY)}, func(v visit) bool { return v.ended && v.class() == "no_reply" }},
		{"visitor", &reportingv1.Filter{VisitorToken: "vis-1"}, func(v visit) bool { return v.visitor == "vis-1" }},
		{"visitor and resolved", &reportingv1.Filter{VisitorToken: "vis-4", Resolved: yes}, func(v visit) bool { return v.visitor == "vis-4" && v.resolved }},
		{"several nodes", &reportingv1.Filter{NodeIds: []string{"n-ask", "n-pay"}, NodeId: "n-free"}, func(v visit) bool { return v.botNode == "n-ask" || v.flow || v.visitorNode == "n-free" }},
	}
	for _, c := range cases {
		got, total := f.list(t, allTime(c.fl), 2)
		w := want(vs, c.keep)
		if !slices.Equal(got, w) || total != uint64(len(w)) {
			t.Errorf("%s: got %v (total %d), want %v", c.name, got, total, w)
		}
	}
}

// Full-text search matches whole words, case and punctuation aside, every
// word of the query, within the time range.
func TestTextSearchUsesTheIndexWithinTheRange(t *testing.T) {
	f, vs := startVisits(t)
	last30 := &reportingv1.TimeRange{Preset: "last_30_days"}
	cases := []struct {
		text  string
		tr    *reportingv1.TimeRange
		words []string
	}{
		{"refund", last30, []string{"refund"}},
		{"REFUND!", nil, []string{"refund"}},
		{"order, refund", last30, []string{"order", "refund"}},
		{"order", last30, []string{"order"}},
		{"refunds", last30, []string{"refunds"}},
		{"nothing-like-this", last30, []string{"nothing", "like", "this"}},
	}
	for _, c := range cases {
		tr := c.tr
		if tr == nil {
			tr = &reportingv1.TimeRange{Preset: "all_time"}
		}
		got, total := f.list(t, &reportingv1.Filter{TimeRange: tr, Text: c.text}, 2)
		w := want(vs, func(v visit) bool { return v.words(c.words...) && (c.tr == nil || v.ageHours < 29*24) })
		if !slices.Equal(got, w) || total != uint64(len(w)) {
			t.Errorf("text %q in %v: got %v (total %d), want %v", c.text, tr.Preset, got, total, w)
		}
	}
	// The index holds one row per word of a message, not a copy of them.
	var rows uint64
	ch, err := chstore.Open(context.Background(), config.ClickHouse{Addr: f.ch.Addr, Database: f.ch.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.QueryRow(context.Background(), `SELECT count() FROM message_tokens FINAL WHERE tenant_id = 'acme' AND token = 'refund'`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if w := len(want(vs, func(v visit) bool { return v.words("refund") })); rows != uint64(w) {
		t.Errorf("index rows for refund: %d, want %d", rows, w)
	}
	_, err = f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: &reportingv1.Filter{Text: "?!"}})
	if got := badField(err); got != "filter.text" {
		t.Errorf("search without words: %s", got)
	}
}

// GetVisitor returns every conversation of the visitor, paged, with first
// and last seen, leads and the latest value of each variable; over gRPC
// and HTTP/JSON.
func TestGetVisitor(t *testing.T) {
	f, vs := startVisits(t)
	var mine []visit
	for _, v := range vs {
		if v.visitor == "vis-1" {
			mine = append(mine, v)
		}
	}
	wantIDs := want(mine, func(visit) bool { return true })
	oldest, newest := mine[0], mine[0]
	vars := map[string]string{}
	for _, v := range mine {
		if v.ageHours > oldest.ageHours {
			oldest = v
		}
		if v.ageHours < newest.ageHours {
			newest = v
		}
	}
	// Oldest first, so a newer conversation's value overwrites.
	sorted := slices.Clone(mine)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ageHours > sorted[j].ageHours })
	for _, v := range sorted {
		for k, val := range v.vars {
			vars[k] = val
		}
	}
	var ids []string
	token := ""
	var first *reportingv1.Visitor
	for range 10 {
		res, err := f.client.GetVisitor(f.ctx(), &reportingv1.GetVisitorRequest{VisitorToken: "vis-1", PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = res
		}
		for _, c := range res.Conversations {
			ids = append(ids, c.ConversationId)
		}
		if token = res.NextPageToken; token == "" {
			break
		}
	}
	if !slices.Equal(ids, wantIDs) {
		t.Errorf("conversations %v, want %v", ids, wantIDs)
	}
	startOldest := f.now.Add(-time.Duration(oldest.ageHours) * time.Hour).Truncate(time.Second)
	if first.ConversationCount != uint64(len(mine)) || !first.FirstSeen.AsTime().Equal(startOldest) {
		t.Errorf("count %d first seen %v, want %d %v", first.ConversationCount, first.FirstSeen.AsTime(), len(mine), startOldest)
	}
	// Last activity: the newest conversation's last event before its
	// classification (events are a second apart).
	n := len(newest.events(f.now)) - 1
	if newest.ended {
		n--
	}
	lastSeen := f.now.Add(-time.Duration(newest.ageHours) * time.Hour).Truncate(time.Second).Add(time.Duration(n) * time.Second)
	if !first.LastSeen.AsTime().Equal(lastSeen) {
		t.Errorf("last seen %v, want %v", first.LastSeen.AsTime(), lastSeen)
	}
	if fmt.Sprint(first.Variables) != fmt.Sprint(vars) {
		t.Errorf("variables %v, want %v", first.Variables, vars)
	}
	if first.DisplayName != "Name "+newest.id {
		t.Errorf("display name %q, want the newest conversation's", first.DisplayName)
	}
	if first.LeadCount != 1 || len(first.Leads) != 1 || first.Leads[0].Name != "Eve" || first.Leads[0].ConversationId != "vs-e" {
		t.Errorf("leads %d %v", first.LeadCount, first.Leads)
	}

	// HTTP/JSON.
	code, body := f.httpCall(t, http.MethodGet, "/v1/visitors/vis-1?page_size=50", f.key)
	var hv struct {
		ConversationCount string `json:"conversation_count"`
		Conversations     []struct {
			ConversationID string `json:"conversation_id"`
		} `json:"conversations"`
	}
	if err := json.Unmarshal(body, &hv); err != nil || code != http.StatusOK || hv.ConversationCount != fmt.Sprint(len(mine)) || len(hv.Conversations) != len(mine) {
		t.Errorf("HTTP: %d %s", code, body)
	}

	// Unknown visitor, missing token, another tenant.
	if _, err := f.client.GetVisitor(f.ctx(), &reportingv1.GetVisitorRequest{VisitorToken: "nobody"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown visitor: %v", err)
	}
	if _, err := f.client.GetVisitor(f.ctx(), &reportingv1.GetVisitorRequest{}); badField(err) != "visitor_token" {
		t.Errorf("missing token: %v", err)
	}
	if code, _ := f.httpCall(t, http.MethodGet, "/v1/visitors/vis-1", f.globexKey); code != http.StatusNotFound {
		t.Errorf("another tenant's visitor: %d", code)
	}

	// Returning visitors: more than one conversation in the range.
	counts := map[string]int{}
	for _, v := range vs {
		if v.visitor != "" && v.ageHours < 29*24 {
			counts[v.visitor]++
		}
	}
	returning := 0
	for _, n := range counts {
		if n > 1 {
			returning++
		}
	}
	st, err := f.client.GetVisitorStats(f.ctx(), &reportingv1.GetVisitorStatsRequest{Filter: &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "last_30_days"}}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Visitors != uint64(len(counts)) || st.ReturningVisitors != uint64(returning) || st.ReturningRate != float64(returning)/float64(len(counts)) {
		t.Errorf("visitor stats %v, want %d visitors, %d returning", st, len(counts), returning)
	}
}

// The catalogue lists the flows (with names) and nodes (with whether a bot
// message came from them) the events have shown.
func TestCatalogListsFlowsAndNodes(t *testing.T) {
	f, vs := startVisits(t)
	type node struct {
		flow   string
		prompt bool
		convs  int
	}
	nodes := map[string]node{}
	flows := 0
	for _, v := range vs {
		if v.botNode != "" {
			n := nodes[v.botNode]
			n.prompt, n.convs = true, n.convs+1
			nodes[v.botNode] = n
		}
		if v.visitorNode != "" {
			n := nodes[v.visitorNode]
			n.convs++
			nodes[v.visitorNode] = n
		}
		if v.flow {
			flows++
			n := nodes["n-pay"]
			n.flow, n.convs = "checkout", n.convs+1
			nodes["n-pay"] = n
		}
	}
	res, err := f.client.ListCatalog(f.ctx(), &reportingv1.ListCatalogRequest{BotId: "shop"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Flows) != 1 || res.Flows[0].FlowId != "checkout" || res.Flows[0].Name != "Checkout" || res.Flows[0].Conversations != uint64(flows) {
		t.Errorf("flows %v", res.Flows)
	}
	got := map[string]node{}
	for _, n := range res.Nodes {
		got[n.NodeId] = node{n.FlowId, n.HasPrompt, int(n.Conversations)}
	}
	if fmt.Sprint(got) != fmt.Sprint(nodes) {
		t.Errorf("nodes %v, want %v", got, nodes)
	}
	if res, err := f.client.ListCatalog(f.ctx(), &reportingv1.ListCatalogRequest{BotId: "other"}); err != nil || len(res.Flows)+len(res.Nodes) != 0 {
		t.Errorf("another bot: %v %v", res, err)
	}
	code, body := f.httpCall(t, http.MethodPost, "/v1/catalog", f.key)
	if code != http.StatusOK || !strings.Contains(string(body), `"node_id":"n-pay"`) {
		t.Errorf("HTTP: %d %s", code, body)
	}
}
