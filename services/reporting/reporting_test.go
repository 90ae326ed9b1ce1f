package reporting_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/libs/testsvc"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// conv is the test's own model of one generated conversation: the expected
// answers are computed from it, never from ClickHouse.
type conv struct {
	id               string
	tenant           string
	started          time.Time
	bot              string
	channel          eventv1.Channel
	platform         eventv1.Platform
	test             bool
	visitorMsgs      int
	botMsgs          int
	goal, lead       bool
	takeover         bool
	noResponse       bool
	tag, label       bool
	flagged          bool
	flow, step, drop bool
	country, city    string
	ended            bool
	refundText       bool
	cost             int64
	marker, cart     bool
	// firstMs and respMs are the agent's first response and reply times as
	// lifecycle states them (ended conversations with a takeover; the
	// client's response_time_ms of the agent's message is 3000).
	firstMs, respMs uint32
}

func (c conv) messages() int { return c.visitorMsgs + c.botMsgs + b2i(c.takeover) }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func model(tenant string, n int, now time.Time) []conv {
	var out []conv
	countries := []string{"DE", "FR", "US"}
	cities := []string{"Berlin", "Paris", "Boston"}
	for i := range n {
		c := conv{
			id: fmt.Sprintf("%s-c%03d", tenant, i), tenant: tenant,
			started:     now.Add(-time.Duration(i)*37*time.Minute - time.Minute).Truncate(time.Millisecond),
			bot:         []string{"shop", "support"}[i%2],
			channel:     []eventv1.Channel{eventv1.Channel_CHANNEL_WEB_WIDGET, eventv1.Channel_CHANNEL_WHATSAPP, eventv1.Channel_CHANNEL_TELEGRAM}[i%3],
			platform:    []eventv1.Platform{eventv1.Platform_PLATFORM_DESKTOP, eventv1.Platform_PLATFORM_MOBILE_WEB, eventv1.Platform_PLATFORM_APP}[(i/3)%3],
			test:        i%10 == 0,
			visitorMsgs: i % 4, botMsgs: 1,
			goal: i%5 == 0, lead: i%6 == 0, takeover: i%7 == 0, noResponse: i%11 == 0 && i%7 != 0,
			tag: i%3 == 0, label: i%8 == 0, flagged: i%9 == 0,
			flow: i%2 == 0, step: i%4 == 0, drop: i%4 == 0 && i%8 != 0,
			country: countries[i%3], city: cities[i%3],
			ended: i%2 == 1, refundText: i%5 == 1 && i%4 != 0,
			cost:   int64(i) * 100,
			marker: i%12 == 0, cart: i%4 == 0,
		}
		if c.takeover && c.ended {
			c.firstMs, c.respMs = uint32(1000+10*i), uint32(2000+20*i)
		}
		out = append(out, c)
	}
	return out
}

func (c conv) events() []*eventv1.Envelope {
	at := c.started
	var out []*eventv1.Envelope
	add := func(producer string, set func(e *eventv1.Envelope)) {
		e := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: c.tenant, ConversationId: c.id, OccurredAt: timestamppb.New(at), Producer: producer}
		set(e)
		out = append(out, e)
		at = at.Add(time.Second)
	}
	typ := eventv1.ConversationType_CONVERSATION_TYPE_LIVE
	if c.test {
		typ = eventv1.ConversationType_CONVERSATION_TYPE_TEST
	}
	add("ingest", func(e *eventv1.Envelope) {
		e.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{
			BotId: c.bot, Channel: c.channel, Platform: c.platform, Type: typ,
			Visitor: &eventv1.Visitor{Token: "tok-" + c.id, DisplayName: "Visitor " + c.id}, Location: &eventv1.Location{Country: c.country, City: c.city},
			PageUrl: "https://shop.example/",
		}}
	})
	if c.cart {
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_PageViewed{PageViewed: &eventv1.PageViewed{Url: "https://shop.example/cart"}}
		})
	}
	if c.marker {
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_MarkerAdded{MarkerAdded: &eventv1.MarkerAdded{Marker: "vip"}}
		})
	}
	add("ingest", func(e *eventv1.Envelope) {
		e.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "Hello, how can I help?", NodeId: "welcome"}}
	})
	for j := range c.visitorMsgs {
		text := fmt.Sprintf("question %d", j)
		if c.refundText && j == 0 {
			text = "I want a REFUND please"
		}
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text}}
		})
	}
	if c.flow {
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_FlowStarted{FlowStarted: &eventv1.FlowStarted{FlowId: "checkout"}}
		})
	}
	if c.step {
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_FlowStep{FlowStep: &eventv1.FlowStep{FlowId: "checkout", StepId: "pay", NodeId: "n-pay"}}
		})
	}
	if c.drop {
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_FlowDropped{FlowDropped: &eventv1.FlowDropped{FlowId: "checkout", StepId: "pay", NodeId: "n-pay"}}
		})
	}
	if c.goal {
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_GoalReached{GoalReached: &eventv1.GoalReached{GoalId: "purchase"}}
		})
	}
	if c.lead {
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_LeadCaptured{LeadCaptured: &eventv1.LeadCaptured{Email: "x@example.com"}}
		})
	}
	if c.takeover || c.noResponse {
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_HandoffRequested{HandoffRequested: &eventv1.HandoffRequested{}}
		})
	}
	if c.takeover {
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_AgentJoined{AgentJoined: &eventv1.AgentJoined{AgentId: "ann", AgentName: "Ann"}}
		})
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, Text: "Ann here", AgentId: "ann", ResponseTimeMs: 3000}}
		})
	}
	if c.noResponse {
		add("lifecycle", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_OperatorNoResponse{OperatorNoResponse: &eventv1.OperatorNoResponse{}}
		})
	}
	if c.cost > 0 {
		add("ingest", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_UsageRecorded{UsageRecorded: &eventv1.UsageRecorded{CostMicros: c.cost, InputTokens: 10, OutputTokens: 5, PaidMessages: 1}}
		})
	}
	if c.tag {
		add("tagging", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_TagApplied{TagApplied: &eventv1.TagApplied{Tag: "unidentified-response"}}
		})
	}
	if c.label {
		add("tagging", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_LabelAdded{LabelAdded: &eventv1.LabelAdded{Label: "refund"}}
		})
	}
	if c.flagged {
		add("tagging", func(e *eventv1.Envelope) { e.Payload = &eventv1.Envelope_Flagged{Flagged: &eventv1.Flagged{}} })
	}
	if c.ended {
		add("lifecycle", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_VISITOR_CLOSED}}
		})
		eng := eventv1.Engagement_ENGAGEMENT_NO_REPLY
		if c.visitorMsgs > 0 {
			eng = eventv1.Engagement_ENGAGEMENT_ENGAGED
		}
		ec := &eventv1.EngagementClassified{Engagement: eng}
		if c.takeover {
			// As lifecycle states them, unlike the client's 3s.
			ec.FirstResponseMs, ec.AgentReplies, ec.AgentResponseMsSum, ec.AverageResponseMs = proto.Uint32(c.firstMs), 1, uint64(c.respMs), c.respMs
		}
		add("lifecycle", func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_EngagementClassified{EngagementClassified: ec}
		})
	}
	return out
}

type fixture struct {
	cfg       reporting.Config
	pgURL     string
	client    reportingv1.ReportingServiceClient
	key       string
	globexKey string
	adminKey  string
	// opKey is a platform key with the operator scope.
	opKey   string
	ch      *testenv.ClickHouseDB
	httpURL string
	bus     *eventbus.Bus
	nats    *testenv.NATSServer
	now     time.Time
	acme    []conv
}

func (f *fixture) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "x-api-key", f.key)
}

func start(t *testing.T) *fixture { return startWith(t, nil) }

// startWith is start with the configuration changed by mutate.
func startWith(t *testing.T, mutate func(*reporting.Config)) *fixture {
	t.Helper()
	f := startEmptyWith(t, mutate)
	f.acme = model("acme", 60, f.now)
	for _, c := range append(slices.Clone(f.acme), model("globex", 5, f.now)...) {
		for _, e := range c.events() {
			if _, err := f.bus.Publish(context.Background(), e); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.waitTotal(t, &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "all_time"}}, 60)
	f.waitProjected(t)
	return f
}

// waitProjected waits until every partition's committed position is at
// the end of the stream (conversation rows appear before all their events
// are in).
func (f *fixture) waitProjected(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		last, err := f.bus.LastSequence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if projectedTo(t, f.pgURL) >= last {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("projector did not catch up")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// projectedTo is the lowest committed position of the projector's
// partitions.
func projectedTo(t testing.TB, pgURL string) uint64 {
	t.Helper()
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	pos, err := partition.Positions(ctx, pool, "reporting-projector", partition.DefaultPartitions)
	if err != nil {
		return 0 // not migrated yet
	}
	return slices.Min(pos)
}

// startEmpty runs reporting over fresh NATS, PostgreSQL and ClickHouse with
// tenants acme and globex and no events.
func startEmpty(t testing.TB) *fixture { return startEmptyWith(t, nil) }

// startEmptyWith is startEmpty with the configuration changed by mutate
// (nil: unchanged) before the service starts.
func startEmptyWith(t testing.TB, mutate func(*reporting.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	n := testenv.NATS(t)
	pgURL := testenv.Postgres(t)
	db := testenv.ClickHouse(t)
	keys := testsvc.Tenants(t, pgURL, []string{grpcx.ScopeRead}, "acme", "globex")
	key := keys["acme"]
	adminKey := testsvc.Tenants(t, pgURL, []string{grpcx.ScopeRead, grpcx.ScopeAdmin}, "ops")["ops"]
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	auth := platformAuth{key: "operator-" + eventbus.NewEventID(), next: tenancy.NewStore(pool)}
	grpcAddr, adminAddr := testsvc.Addrs(t)
	hport, _ := localinfra.FreePort()
	cfg := reporting.Config{
		Config: service.Config{Server: config.Server{ShutdownTimeout: 5 * time.Second}, NATS: config.NATS{URL: n.URL, Replicas: 1, DuplicateWindow: time.Minute},
			Postgres: config.Postgres{URL: pgURL, MaxConns: 4}, GRPCAddr: grpcAddr, AdminAddr: adminAddr, Telemetry: testenv.Telemetry(t, "reporting")},
		ClickHouse:     config.ClickHouse{Addr: db.Addr, Database: db.Database, User: "default"},
		HTTPAddr:       fmt.Sprintf("127.0.0.1:%d", hport),
		ProjectorBatch: 200, ProjectorMaxWait: 50 * time.Millisecond, QueryTimeout: 10 * time.Second,
		ShareBaseURL: fmt.Sprintf("http://127.0.0.1:%d", hport), ShareTTL: time.Hour, Authenticator: auth,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	testsvc.Serve(t, "reporting", func(ctx context.Context) error { return reporting.Run(ctx, cfg) })
	conn := testsvc.Dial(t, cfg.GRPCAddr)
	bus, err := eventbus.Connect(ctx, n.URL, "test", eventbus.Options{Producer: "ingest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	if err = bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	f := &fixture{cfg: cfg, pgURL: pgURL, client: reportingv1.NewReportingServiceClient(conn), key: key, globexKey: keys["globex"], adminKey: adminKey, opKey: auth.key, ch: db, httpURL: cfg.ShareBaseURL, bus: bus, nats: n, now: time.Now().UTC()}
	// Wait until the service answers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{PageSize: 1})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reporting not serving: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f
}

// platformAuth authenticates one platform key holding the operator scope
// (tenancy cannot issue platform keys yet) and every other key through
// tenancy.
type platformAuth struct {
	key  string
	next grpcx.Authenticator
}

// OperatorKeyID is the key id of the fixture's platform key.
const OperatorKeyID = "op-test-key"

func (a platformAuth) Authenticate(ctx context.Context, key string) (grpcx.Principal, error) {
	if key == a.key {
		return grpcx.Principal{KeyID: OperatorKeyID, Scopes: []string{grpcx.ScopeOperator}}, nil
	}
	return a.next.Authenticate(ctx, key)
}

// waitTotal polls until the filter matches want conversations.
func (f *fixture) waitTotal(t *testing.T, fl *reportingv1.Filter, want uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: fl, PageSize: 1})
		if err == nil && res.TotalCount == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("projection incomplete: %v %v", res.GetTotalCount(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// list returns every conversation id matching fl, paging through.
func (f *fixture) list(t *testing.T, fl *reportingv1.Filter, pageSize uint32) ([]string, uint64) {
	t.Helper()
	var ids []string
	token := ""
	var total uint64
	for range 100 {
		res, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: fl, PageSize: pageSize, PageToken: token})
		if err != nil {
			t.Fatalf("list %v: %v", fl, err)
		}
		total = res.TotalCount
		for _, c := range res.Conversations {
			ids = append(ids, c.ConversationId)
		}
		if token = res.NextPageToken; token == "" {
			return ids, total
		}
	}
	t.Fatal("too many pages")
	return nil, 0
}

func allTime(f *reportingv1.Filter) *reportingv1.Filter {
	if f.TimeRange == nil {
		f.TimeRange = &reportingv1.TimeRange{Preset: "all_time"}
	}
	return f
}

func expect(cs []conv, keep func(conv) bool) []string {
	var ids []string
	for _, c := range cs {
		if keep(c) {
			ids = append(ids, c.id)
		}
	}
	// Newest first: the model's conversations start further back as i grows.
	return ids
}

func TestFiltersAloneAndCombined(t *testing.T) {
	f := start(t)
	yes, no := proto.Bool(true), proto.Bool(false)
	cases := []struct {
		name string
		f    *reportingv1.Filter
		keep func(conv) bool
	}{
		{"default: last 24 hours", &reportingv1.Filter{}, func(c conv) bool { return c.started.After(f.now.Add(-24 * time.Hour)) }},
		{"all time", allTime(&reportingv1.Filter{}), func(conv) bool { return true }},
		{"custom range", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "custom", From: timestamppb.New(f.now.Add(-10 * time.Hour)), To: timestamppb.New(f.now.Add(-2 * time.Hour))}},
			func(c conv) bool {
				return !c.started.Before(f.now.Add(-10*time.Hour)) && c.started.Before(f.now.Add(-2*time.Hour))
			}},
		{"status active", allTime(&reportingv1.Filter{Statuses: []string{"active"}}), func(c conv) bool { return !c.ended }},
		{"status ended", allTime(&reportingv1.Filter{Statuses: []string{"ended"}}), func(c conv) bool { return c.ended }},
		{"no operator response", allTime(&reportingv1.Filter{Statuses: []string{"no_operator_response"}}), func(c conv) bool { return c.noResponse }},
		{"bots", allTime(&reportingv1.Filter{BotIds: []string{"support"}}), func(c conv) bool { return c.bot == "support" }},
		{"channel", allTime(&reportingv1.Filter{Channels: []eventv1.Channel{eventv1.Channel_CHANNEL_WHATSAPP, eventv1.Channel_CHANNEL_TELEGRAM}}), func(c conv) bool { return c.channel != eventv1.Channel_CHANNEL_WEB_WIDGET }},
		{"platform", allTime(&reportingv1.Filter{Platforms: []eventv1.Platform{eventv1.Platform_PLATFORM_APP}}), func(c conv) bool { return c.platform == eventv1.Platform_PLATFORM_APP }},
		{"type test", allTime(&reportingv1.Filter{Types: []eventv1.ConversationType{eventv1.ConversationType_CONVERSATION_TYPE_TEST}}), func(c conv) bool { return c.test }},
		{"engagement no reply", allTime(&reportingv1.Filter{Engagements: []eventv1.Engagement{eventv1.Engagement_ENGAGEMENT_NO_REPLY}}), func(c conv) bool { return c.ended && c.visitorMsgs == 0 }},
		{"goals", allTime(&reportingv1.Filter{Goals: []string{"purchase"}}), func(c conv) bool { return c.goal }},
		{"taken over", allTime(&reportingv1.Filter{TakenOver: yes}), func(c conv) bool { return c.takeover }},
		{"not taken over", allTime(&reportingv1.Filter{TakenOver: no}), func(c conv) bool { return !c.takeover }},
		{"has lead", allTime(&reportingv1.Filter{HasLead: yes}), func(c conv) bool { return c.lead }},
		{"tags", allTime(&reportingv1.Filter{Tags: []string{"unidentified-response"}}), func(c conv) bool { return c.tag }},
		{"labels", allTime(&reportingv1.Filter{Labels: []string{"refund"}}), func(c conv) bool { return c.label }},
		{"flagged", allTime(&reportingv1.Filter{Flagged: yes}), func(c conv) bool { return c.flagged }},
		{"flow", allTime(&reportingv1.Filter{FlowId: "checkout"}), func(c conv) bool { return c.flow }},
		{"flow step", allTime(&reportingv1.Filter{FlowId: "checkout", FlowStepId: "pay"}), func(c conv) bool { return c.step }},
		{"dropped off at step", allTime(&reportingv1.Filter{FlowId: "checkout", FlowStepId: "pay", DroppedOff: true}), func(c conv) bool { return c.drop }},
		{"node", allTime(&reportingv1.Filter{NodeId: "n-pay"}), func(c conv) bool { return c.step || c.drop }},
		{"country", allTime(&reportingv1.Filter{Country: "fr"}), func(c conv) bool { return c.country == "FR" }},
		{"city", allTime(&reportingv1.Filter{City: "Boston"}), func(c conv) bool { return c.city == "Boston" }},
		{"end reason", allTime(&reportingv1.Filter{EndReasons: []eventv1.EndReason{eventv1.EndReason_END_REASON_VISITOR_CLOSED}}), func(c conv) bool { return c.ended }},
		{"agent", allTime(&reportingv1.Filter{AgentId: "ann"}), func(c conv) bool { return c.takeover }},
		{"text search (case-insensitive)", allTime(&reportingv1.Filter{Text: "refund"}), func(c conv) bool { return c.refundText }},
		{"combined", allTime(&reportingv1.Filter{BotIds: []string{"shop"}, Statuses: []string{"active"}, Tags: []string{"unidentified-response"}, Country: "DE"}),
			func(c conv) bool { return c.bot == "shop" && !c.ended && c.tag && c.country == "DE" }},
		{"combined with range", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "last_24_hours"}, Channels: []eventv1.Channel{eventv1.Channel_CHANNEL_WEB_WIDGET}, HasLead: no, FlowId: "checkout"},
			func(c conv) bool {
				return c.started.After(f.now.Add(-24*time.Hour)) && c.channel == eventv1.Channel_CHANNEL_WEB_WIDGET && !c.lead && c.flow
			}},
	}
	for _, c := range cases {
		want := expect(f.acme, c.keep)
		got, total := f.list(t, c.f, 7)
		if !slices.Equal(got, want) || total != uint64(len(want)) {
			t.Errorf("%s: got %d (total %d) %v\nwant %d %v", c.name, len(got), total, got, len(want), want)
		}
	}
}

func TestPaginationIsStableUnderIngest(t *testing.T) {
	f := start(t)
	fl := allTime(&reportingv1.Filter{})
	first, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: fl, PageSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	// New conversations start while the client pages.
	for _, c := range model("acme", 3, f.now.Add(2*time.Minute)) {
		c.id = "new-" + c.id
		for _, e := range c.events() {
			e.ConversationId = c.id
			if _, err := f.bus.Publish(context.Background(), e); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.waitTotal(t, fl, 63)
	f.waitProjected(t)
	ids := []string{}
	for _, c := range first.Conversations {
		ids = append(ids, c.ConversationId)
	}
	token := first.NextPageToken
	for token != "" {
		res, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: fl, PageSize: 10, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range res.Conversations {
			ids = append(ids, c.ConversationId)
		}
		token = res.NextPageToken
	}
	if want := expect(f.acme, func(conv) bool { return true }); !slices.Equal(ids, want) {
		t.Fatalf("pages shifted under ingest:\n got %v\nwant %v", ids, want)
	}
	_, err = f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{PageToken: "bogus!"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad token: %v", err)
	}
}

func TestDashboardMatchesIndependentCounts(t *testing.T) {
	f := start(t)
	d, err := f.client.GetDashboard(f.ctx(), &reportingv1.GetDashboardRequest{Filter: allTime(&reportingv1.Filter{})})
	if err != nil {
		t.Fatal(err)
	}
	var active, ended, msgs, leads, goals, noResp int
	var cost int64
	tags := 0
	countries := map[string]int{}
	days := map[string]int{}
	for _, c := range f.acme {
		if c.ended {
			ended++
		} else {
			active++
		}
		msgs += c.messages()
		leads += b2i(c.lead)
		goals += b2i(c.goal)
		noResp += b2i(c.noResponse)
		cost += c.cost
		tags += b2i(c.tag)
		countries[c.country]++
		days[c.started.Format(time.DateOnly)]++
	}
	n := float64(len(f.acme))
	if d.Total != 60 || d.Active != uint64(active) || d.Ended != uint64(ended) || d.Messages != uint64(msgs) ||
		d.AverageMessages != float64(msgs)/n || d.LeadConversionRate != float64(leads)/n || d.GoalCompletionRate != float64(goals)/n ||
		d.CostMicros != cost || d.Tokens != uint64(15*(len(f.acme)-1)) {
		t.Fatalf("dashboard %+v", d)
	}
	if d.Statuses[2].Key != "no_operator_response" || d.Statuses[2].Count != uint64(noResp) {
		t.Fatalf("statuses %v", d.Statuses)
	}
	if len(d.TopTags) != 1 || d.TopTags[0].Key != "unidentified-response" || d.TopTags[0].Count != uint64(tags) {
		t.Fatalf("top tags %v", d.TopTags)
	}
	for _, b := range d.Countries {
		if countries[b.Key] != int(b.Count) {
			t.Fatalf("countries %v want %v", d.Countries, countries)
		}
	}
	if len(d.Trend) != 30 || d.Trend[29].Date != f.now.Format(time.DateOnly) {
		t.Fatalf("trend %v", d.Trend)
	}
	for _, day := range d.Trend {
		if int(day.Conversations) != days[day.Date] {
			t.Fatalf("trend day %s: %d want %d", day.Date, day.Conversations, days[day.Date])
		}
	}
	// A filtered dashboard.
	d, err = f.client.GetDashboard(f.ctx(), &reportingv1.GetDashboardRequest{Filter: allTime(&reportingv1.Filter{BotIds: []string{"shop"}})})
	if err != nil || d.Total != 30 {
		t.Fatalf("filtered: %v %v", d, err)
	}
}

func TestTenantIsolationAndShareLinks(t *testing.T) {
	f := start(t)
	ids, total := f.list(t, allTime(&reportingv1.Filter{}), 200)
	for _, id := range ids {
		if !strings.HasPrefix(id, "acme-") {
			t.Fatalf("acme sees %s", id)
		}
	}
	if total != 60 {
		t.Fatalf("total %d", total)
	}
	if _, err := f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "globex-c001"}); status.Code(err) != codes.NotFound {
		t.Fatalf("another tenant's conversation: %v", err)
	}
	c, err := f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "acme-c007"})
	if err != nil {
		t.Fatal(err)
	}
	m := f.acme[7]
	if c.Summary.BotId != m.bot || !c.Summary.TakenOver || c.Summary.AgentName != "Ann" || len(c.Messages) != m.messages() ||
		c.Summary.Status != "ended" || c.AverageResponseMs != m.respMs || c.CostMicros != m.cost || c.ShareUrl == "" {
		t.Fatalf("conversation %v", c)
	}
	// The share link opens the conversation without a key, over HTTP.
	resp, err := http.Get(c.ShareUrl)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var shared map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(body, &shared) != nil || !strings.Contains(string(body), `"conversation_id":"acme-c007"`) {
		t.Fatalf("share link: %d %s", resp.StatusCode, body)
	}
	// Without key or token: refused; a tampered token: refused.
	if _, err := f.client.GetConversation(context.Background(), &reportingv1.GetConversationRequest{ConversationId: "acme-c007"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no key: %v", err)
	}
	tok := c.ShareUrl[strings.LastIndex(c.ShareUrl, "/")+1:]
	if _, err := f.client.GetConversation(context.Background(), &reportingv1.GetConversationRequest{ShareToken: tok + "x"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("tampered: %v", err)
	}
	if _, err := f.client.GetConversation(context.Background(), &reportingv1.GetConversationRequest{ShareToken: tok, ConversationId: "acme-c008"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("token for another conversation: %v", err)
	}
	// List over HTTP/JSON.
	req, _ := http.NewRequest("POST", f.httpURL+"/v1/conversations:search", strings.NewReader(`{"filter":{"time_range":{"preset":"all_time"},"bot_ids":["shop"]},"page_size":5}`))
	req.Header.Set("X-Api-Key", f.key)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"total_count":"30"`) {
		t.Fatalf("http list: %d %s", resp.StatusCode, body)
	}
	// Invalid filters name the field.
	_, err = f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: &reportingv1.Filter{Statuses: []string{"asleep"}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "filter.statuses[0]") {
		t.Fatalf("invalid filter: %v", err)
	}
	sort.Strings(ids)
}

func TestReportsMatchIndependentNumbers(t *testing.T) {
	f := start(t)
	run := func(kind string, withTimes bool, fl *reportingv1.Filter) *reportingv1.Report {
		t.Helper()
		r, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: kind, Filter: allTime(fl), WithMessageTimes: withTimes})
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		return r
	}
	col := func(r *reportingv1.Report, name string) int {
		for i, c := range r.Columns {
			if c == name {
				return i
			}
		}
		t.Fatalf("no column %s in %v", name, r.Columns)
		return -1
	}
	byKey := func(r *reportingv1.Report, keyCols ...string) map[string][]string {
		out := map[string][]string{}
		for _, row := range r.Rows {
			var k []string
			for _, c := range keyCols {
				k = append(k, row.Values[col(r, c)])
			}
			out[strings.Join(k, "|")] = row.Values
		}
		return out
	}
	itoa := func(n int) string { return fmt.Sprint(n) }

	// sessions: every conversation, newest first, with its dialog.
	r := run("sessions", false, &reportingv1.Filter{})
	if len(r.Rows) != 60 || r.Rows[0].Values[0] != f.acme[0].id {
		t.Fatalf("sessions: %d rows, first %v", len(r.Rows), r.Rows[0].Values[:2])
	}
	rows := byKey(r, "conversation_id")
	for _, c := range f.acme {
		row := rows[c.id]
		dialog := strings.Split(row[col(r, "dialog")], "\n")
		if row[col(r, "messages")] != itoa(c.messages()) || len(dialog) != c.messages() || !strings.HasPrefix(dialog[0], "bot: Hello") {
			t.Fatalf("sessions %s: %v", c.id, row)
		}
	}
	r = run("sessions", true, &reportingv1.Filter{BotIds: []string{"shop"}})
	if len(r.Rows) != 30 || !strings.HasPrefix(r.Rows[0].Values[col(r, "dialog")], f.acme[0].started.Format("2006-01-02")) {
		t.Fatalf("sessions with times: %d %q", len(r.Rows), r.Rows[0].Values[col(r, "dialog")])
	}
	// sessions_with_markers
	r = run("sessions_with_markers", false, &reportingv1.Filter{})
	var markers []string
	for _, c := range f.acme {
		if c.marker {
			markers = append(markers, c.id)
		}
	}
	if len(r.Rows) != len(markers) || r.Rows[0].Values[col(r, "markers")] != "vip" {
		t.Fatalf("markers: %d rows, want %d", len(r.Rows), len(markers))
	}
	// billing, per bot and currency: usage sent without a currency is in
	// USD (docs/events.md); conversations without usage have none.
	type agg struct {
		convs, paid, bot, agent, visitor, transferred int
		cost                                          int64
	}
	billing := map[string]*agg{}
	sources := map[string]*agg{}
	for _, c := range f.acme {
		ch := strings.ToLower(strings.TrimPrefix(c.channel.String(), "CHANNEL_"))
		cur := ""
		if c.cost > 0 {
			cur = "USD"
		}
		b := billing[c.bot+"|"+cur]
		if b == nil {
			b = &agg{}
			billing[c.bot+"|"+cur] = b
		}
		b.convs++
		b.cost += c.cost
		if c.cost > 0 {
			b.paid++
		}
		k := ch + "|" + c.bot
		s := sources[k]
		if s == nil {
			s = &agg{}
			sources[k] = s
		}
		s.convs++
		s.bot += c.botMsgs
		s.visitor += c.visitorMsgs
		s.agent += b2i(c.takeover)
		s.transferred += b2i(c.takeover)
	}
	r = run("billing", false, &reportingv1.Filter{})
	if len(r.Rows) != len(billing) {
		t.Fatalf("billing: %d rows want %d", len(r.Rows), len(billing))
	}
	for key, b := range billing {
		row := byKey(r, "bot_id", "currency")[key]
		if row == nil || row[col(r, "conversations")] != itoa(b.convs) || row[col(r, "paid_messages")] != itoa(b.paid) || row[col(r, "cost_micros")] != fmt.Sprint(b.cost) {
			t.Fatalf("billing %s: %v want %+v", key, row, b)
		}
	}
	r = run("sources", false, &reportingv1.Filter{})
	if len(r.Rows) != len(sources) {
		t.Fatalf("sources: %d rows want %d", len(r.Rows), len(sources))
	}
	for k, s := range sources {
		row := byKey(r, "channel", "bot_id")[k]
		if row == nil || row[col(r, "conversations")] != itoa(s.convs) || row[col(r, "bot_messages")] != itoa(s.bot) ||
			row[col(r, "visitor_messages")] != itoa(s.visitor) || row[col(r, "agent_messages")] != itoa(s.agent) || row[col(r, "transferred_to_operator")] != itoa(s.transferred) {
			t.Fatalf("sources %s: %v want %+v", k, row, s)
		}
	}
	// operators and productivity: the agent's times as lifecycle states
	// them, not the client's response_time_ms.
	takeovers, withTimes := 0, 0
	var firstSum, respSum int
	prod := map[string]conv{}
	for _, c := range f.acme {
		if c.takeover {
			takeovers++
			prod[c.id] = c
		}
		if c.firstMs > 0 {
			withTimes++
			firstSum += int(c.firstMs)
			respSum += int(c.respMs)
		}
	}
	roundDiv := func(a, b int) string { return itoa(int(math.Round(float64(a) / float64(b)))) }
	r = run("operators", false, &reportingv1.Filter{})
	if len(r.Rows) != 1 || r.Rows[0].Values[0] != "ann" || r.Rows[0].Values[col(r, "conversations")] != itoa(takeovers) ||
		r.Rows[0].Values[col(r, "first_response_avg_ms")] != roundDiv(firstSum, withTimes) ||
		r.Rows[0].Values[col(r, "response_avg_ms")] != roundDiv(respSum, withTimes) || r.Rows[0].Values[col(r, "replies")] != itoa(withTimes) {
		t.Fatalf("operators: %v, want first %s, reply %s over %d", r.Rows, roundDiv(firstSum, withTimes), roundDiv(respSum, withTimes), withTimes)
	}
	r = run("productivity", false, &reportingv1.Filter{})
	if len(r.Rows) != takeovers {
		t.Fatalf("productivity: %d rows want %d", len(r.Rows), takeovers)
	}
	for _, rr := range r.Rows {
		row := rr.Values
		c := prod[row[0]]
		if row[col(r, "agent_messages")] != "1" || row[col(r, "visitor_messages")] != itoa(c.visitorMsgs) ||
			row[col(r, "first_response_ms")] != itoa(int(c.firstMs)) || row[col(r, "response_avg_ms")] != itoa(int(c.respMs)) {
			t.Fatalf("productivity row %v want %+v", row, c)
		}
	}
	// pages.
	cart := 0
	for _, c := range f.acme {
		cart += b2i(c.cart)
	}
	pages := byKey(run("pages", false, &reportingv1.Filter{}), "url")
	if pages["https://shop.example/"][1] != "60" || pages["https://shop.example/cart"][1] != itoa(cart) {
		t.Fatalf("pages: %v", pages)
	}
	// popular and client phrases.
	phrases := map[string]int{}
	visitorMsgs := 0
	for _, c := range f.acme {
		for j := range c.visitorMsgs {
			text := fmt.Sprintf("question %d", j)
			if c.refundText && j == 0 {
				text = "i want a refund please"
			}
			phrases[text]++
			visitorMsgs++
		}
	}
	r = run("popular_phrases", false, &reportingv1.Filter{})
	if len(r.Rows) != len(phrases) {
		t.Fatalf("popular phrases: %v want %v", r.Rows, phrases)
	}
	for _, row := range r.Rows {
		if itoa(phrases[row.Values[0]]) != row.Values[1] {
			t.Fatalf("phrase %q: %v want %d", row.Values[0], row.Values, phrases[row.Values[0]])
		}
	}
	r = run("client_phrases", true, &reportingv1.Filter{})
	if len(r.Rows) != visitorMsgs || r.Rows[0].Values[col(r, "sent_at")] == "" {
		t.Fatalf("client phrases: %d rows want %d", len(r.Rows), visitorMsgs)
	}
	// Limits and unknown kinds.
	lim, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: "sessions", Filter: allTime(&reportingv1.Filter{}), Limit: 5})
	if err != nil || len(lim.Rows) != 5 || !lim.Truncated {
		t.Fatalf("limit: %v %v", len(lim.GetRows()), err)
	}
	if _, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: "horoscope"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown kind: %v", err)
	}
}

func TestRebuildSwapsInFreshProjections(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	fl := allTime(&reportingv1.Filter{})
	before, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: "sessions", Filter: fl})
	if err != nil {
		t.Fatal(err)
	}
	// Damage the projection: a bogus newer version of one conversation.
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: f.ch.Addr, Database: f.ch.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Exec(ctx, `INSERT INTO conversations (tenant_id, conversation_id, started_at, started_at_us, status, bot_id, version)
		SELECT tenant_id, conversation_id, started_at, started_at_us, status, 'corrupt', 999999999 FROM conversations FINAL
		WHERE tenant_id = 'acme' AND conversation_id = 'acme-c000'`); err != nil {
		t.Fatal(err)
	}
	if ids, _ := f.list(t, allTime(&reportingv1.Filter{BotIds: []string{"corrupt"}}), 10); len(ids) != 1 {
		t.Fatalf("damage not visible: %v", ids)
	}
	// Rebuild while new conversations keep arriving.
	op := metadata.AppendToOutgoingContext(ctx, "x-api-key", f.opKey)
	stream, err := f.client.RebuildProjections(op, &reportingv1.RebuildProjectionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	extra := model("acme", 4, f.now.Add(time.Minute))
	for i := range extra {
		extra[i].id = "during-" + extra[i].id
		for _, e := range extra[i].events() {
			e.ConversationId = extra[i].id
			if _, err := f.bus.Publish(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	progress, err := drain(stream)
	if err != nil {
		t.Fatal(err)
	}
	var phases []string
	for _, p := range progress {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	}
	last := progress[len(progress)-1]
	if !slices.Equal(phases, []string{"replaying", "catching_up", "swapping", "done"}) || last.Events == 0 || last.Sequence != last.TargetSequence {
		t.Fatalf("progress phases %v, last %v", phases, last)
	}
	if last.RequestedByKeyId != OperatorKeyID {
		t.Fatalf("progress names key %q, want %q", last.RequestedByKeyId, OperatorKeyID)
	}
	if ids, _ := f.list(t, allTime(&reportingv1.Filter{BotIds: []string{"corrupt"}}), 10); len(ids) != 0 {
		t.Fatalf("damage survived the rebuild: %v", ids)
	}
	f.waitTotal(t, fl, 64)
	f.waitProjected(t)
	after, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: "sessions", Filter: fl})
	if err != nil {
		t.Fatal(err)
	}
	var kept []*reportingv1.ReportRow
	for _, r := range after.Rows {
		if !strings.HasPrefix(r.Values[0], "during-") {
			kept = append(kept, r)
		}
	}
	if len(kept) != len(before.Rows) {
		t.Fatalf("rows: %d after, %d before", len(kept), len(before.Rows))
	}
	for i := range kept {
		if !slices.Equal(kept[i].Values, before.Rows[i].Values) {
			t.Fatalf("row %d changed:\n%v\n%v", i, before.Rows[i].Values, kept[i].Values)
		}
	}
}

// A rebuild covers every tenant: tenant keys, admin included, are refused;
// only a platform key with the operator scope may ask.
func TestRebuildNeedsOperatorKey(t *testing.T) {
	f := startEmpty(t)
	for _, k := range []struct{ name, key string }{{"tenant admin", f.adminKey}, {"tenant read", f.key}} {
		name, key := k.name, k.key
		ctx := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", key)
		s, err := f.client.RebuildProjections(ctx, &reportingv1.RebuildProjectionsRequest{})
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "operator") {
			t.Fatalf("%s key rebuilding: %v", name, err)
		}
	}
	op := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", f.opKey)
	s, err := f.client.RebuildProjections(op, &reportingv1.RebuildProjectionsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	progress, err := drain(s)
	if err != nil || len(progress) == 0 {
		t.Fatalf("operator key rebuilding: %v", err)
	}
	last := progress[len(progress)-1]
	if last.GetPhase() != "done" || last.GetRequestedByKeyId() != OperatorKeyID {
		t.Fatalf("last progress %v", last)
	}
	// The platform key reads no tenant's conversations.
	if _, err := f.client.ListConversations(op, &reportingv1.ListConversationsRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("operator key listing: %v", err)
	}
}

// drain receives a rebuild's progress until the stream ends.
func drain(s reportingv1.ReportingService_RebuildProjectionsClient) ([]*reportingv1.RebuildProgress, error) {
	var out []*reportingv1.RebuildProgress
	for {
		p, err := s.Recv()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
}
