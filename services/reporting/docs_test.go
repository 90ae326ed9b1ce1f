package reporting_test

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// docsPath is the analyst documentation whose SQL examples must run.
const docsPath = "../../docs/clickhouse.md"

// docsDatabase is the database name the examples use. The test's ClickHouse
// server is private to the test, so the reporting service can use the
// documented name and the examples run as written, without substitution.
const docsDatabase = "parley"

// TestClickHouseDocQueriesRun runs every ```sql block of docs/clickhouse.md
// (except blocks whose info string is "sql ddl") against a database filled by
// the reporting service from a few conversations of tenant "acme" in
// January 2026, with ids c-001 .. c-004 as in the examples. Each statement
// must succeed and return at least one row.
func TestClickHouseDocQueriesRun(t *testing.T) {
	doc, err := os.ReadFile(docsPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks := sqlBlocks(t, string(doc))
	if len(blocks) < 10 {
		t.Fatalf("found only %d sql blocks in %s", len(blocks), docsPath)
	}

	ctx := context.Background()
	conn := seedDocsDatabase(t)
	for _, b := range blocks {
		for _, stmt := range chstore.Statements(b.sql) {
			n, sample, err := runCounting(ctx, conn, stmt)
			switch {
			case err != nil:
				t.Errorf("%s:%d: %v\n%s", docsPath, b.line, err, stmt)
			case n == 0:
				t.Errorf("%s:%d: no rows\n%s", docsPath, b.line, stmt)
			default:
				t.Logf("%s:%d: %d rows, first: %s", docsPath, b.line, n, sample)
			}
		}
	}
}

type sqlBlock struct {
	line int // line of the opening fence, 1-based
	sql  string
}

// sqlBlocks returns the fenced blocks whose info string is exactly "sql".
// Blocks marked "sql ddl" (schema fragments, destructive statements) are
// skipped; any other language is not SQL.
func sqlBlocks(t *testing.T, doc string) []sqlBlock {
	t.Helper()
	var out []sqlBlock
	var cur *sqlBlock
	var body strings.Builder
	inFence := false
	for i, line := range strings.Split(doc, "\n") {
		trimmed := strings.TrimSpace(line)
		if !strings.HasPrefix(trimmed, "```") {
			if cur != nil {
				body.WriteString(line)
				body.WriteByte('\n')
			}
			continue
		}
		if inFence {
			if cur != nil {
				cur.sql = body.String()
				out = append(out, *cur)
				cur = nil
				body.Reset()
			}
			inFence = false
			continue
		}
		inFence = true
		info := strings.Fields(strings.TrimPrefix(trimmed, "```"))
		if len(info) == 0 || !strings.EqualFold(info[0], "sql") {
			continue
		}
		switch {
		case len(info) == 1:
			cur = &sqlBlock{line: i + 1}
		case len(info) == 2 && info[1] == "ddl":
		default:
			t.Fatalf("%s:%d: unknown sql fence %q (use ```sql or ```sql ddl)", docsPath, i+1, trimmed)
		}
	}
	if inFence {
		t.Fatalf("%s: unterminated code fence", docsPath)
	}
	return out
}

// runCounting runs a query and returns its row count and its first row.
func runCounting(ctx context.Context, conn driver.Conn, stmt string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rows, err := conn.Query(ctx, stmt)
	if err != nil {
		return 0, "", err
	}
	defer rows.Close()
	n, sample := 0, ""
	for rows.Next() {
		if n == 0 {
			vals := make([]any, len(rows.ColumnTypes()))
			for i, ct := range rows.ColumnTypes() {
				vals[i] = reflect.New(ct.ScanType()).Interface()
			}
			if err := rows.Scan(vals...); err != nil {
				return 0, "", fmt.Errorf("scan: %w", err)
			}
			parts := make([]string, len(vals))
			for i, v := range vals {
				parts[i] = fmt.Sprintf("%s=%v", rows.Columns()[i], reflect.ValueOf(v).Elem().Interface())
			}
			sample = strings.Join(parts, " ")
		}
		n++
	}
	return n, sample, rows.Err()
}

// seedDocsDatabase runs the reporting service over a private NATS, PostgreSQL
// and ClickHouse and publishes the docs' sample conversations in two rounds,
// with merges stopped before the second, so that the conversations table
// holds an older and a newer row for each, as it does in production until
// merges. Then it duplicates every events and messages row, as a replay
// would. It returns a connection to the database.
func seedDocsDatabase(t *testing.T) driver.Conn {
	t.Helper()
	ctx := context.Background()
	n := testenv.NATS(t)
	pgURL := testenv.Postgres(t)
	chdb := testenv.ClickHouse(t)
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := tenancy.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	store := tenancy.NewStore(pool)
	if err := store.CreateTenant(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	key, _, err := store.CreateAPIKey(ctx, "acme", "docs", []string{grpcx.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	gport, _ := localinfra.FreePort()
	aport, _ := localinfra.FreePort()
	hport, _ := localinfra.FreePort()
	chCfg := config.ClickHouse{Addr: chdb.Addr, Database: docsDatabase, User: "default"}
	cfg := reporting.Config{
		Config: service.Config{Server: config.Server{ShutdownTimeout: 5 * time.Second}, NATS: config.NATS{URL: n.URL, Replicas: 1, DuplicateWindow: time.Minute},
			Postgres: config.Postgres{URL: pgURL, MaxConns: 4}, GRPCAddr: fmt.Sprintf("127.0.0.1:%d", gport), AdminAddr: fmt.Sprintf("127.0.0.1:%d", aport),
			Telemetry: testenv.Telemetry(t, "reporting")},
		ClickHouse: chCfg, HTTPAddr: fmt.Sprintf("127.0.0.1:%d", hport),
		ProjectorBatch: 200, ProjectorMaxWait: 20 * time.Millisecond, QueryTimeout: 10 * time.Second,
		ShareBaseURL: fmt.Sprintf("http://127.0.0.1:%d", hport), ShareTTL: time.Hour,
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- reporting.Run(rctx, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reporting.Run: %v", err)
		}
	})
	gc, err := grpc.NewClient(cfg.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gc.Close() })
	client := reportingv1.NewReportingServiceClient(gc)
	bus, err := eventbus.Connect(ctx, n.URL, "docs-test", eventbus.Options{Producer: "ingest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}

	first, second := docsConversations()
	publish := func(evs []*eventv1.Envelope) {
		t.Helper()
		for _, e := range evs {
			if _, err := bus.Publish(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Round one: every conversation is started; ListConversations sees them.
	publish(first)
	actx := metadata.AppendToOutgoingContext(ctx, "x-api-key", key)
	waitFor(t, "ListConversations counts the 4 conversations", func() (bool, string) {
		res, err := client.ListConversations(actx, &reportingv1.ListConversationsRequest{
			Filter: &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "all_time"}}, PageSize: 1})
		return err == nil && res.TotalCount == 4, fmt.Sprint(res.GetTotalCount(), err)
	})

	conn, err := chstore.Open(ctx, chCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	// From here on, ClickHouse keeps every row it is given, as it may for a
	// long time in production: the examples must be exact without merges.
	for _, table := range []string{"events", "messages", "conversations"} {
		if err := conn.Exec(ctx, `SYSTEM STOP MERGES `+docsDatabase+`.`+table); err != nil {
			t.Fatalf("stop merges on %s: %v", table, err)
		}
	}

	// Round two: the rest. The projector inserts events and messages before
	// the conversations rows of the same batch, so once the folded event
	// counts add up, every table is complete.
	publish(second)
	total := uint64(len(first) + len(second))
	waitFor(t, "every event is folded into conversations", func() (bool, string) {
		var got uint64
		err := conn.QueryRow(ctx, `SELECT toUInt64(sum(event_count)) FROM conversations FINAL WHERE tenant_id = 'acme'`).Scan(&got)
		return err == nil && got == total, fmt.Sprintf("%d of %d, %v", got, total, err)
	})

	// A replay inserts events and messages rows again; the FINAL and
	// GROUP BY event_id examples must see through the copies.
	for _, table := range []string{"events", "messages"} {
		if err := conn.Exec(ctx, `INSERT INTO `+table+` SELECT * FROM `+table+` WHERE tenant_id = 'acme'`); err != nil {
			t.Fatalf("duplicate %s: %v", table, err)
		}
	}

	// What the docs say about FINAL holds for this data: without it, events
	// and conversations are counted more than once, and stale versions of
	// ended conversations still look active.
	for _, c := range []struct {
		query string
		ok    func(uint64) bool
	}{
		{`SELECT count() FROM events WHERE tenant_id = 'acme'`, func(n uint64) bool { return n == 2*total }},
		{`SELECT count() FROM events FINAL WHERE tenant_id = 'acme'`, func(n uint64) bool { return n == total }},
		{`SELECT count() FROM conversations WHERE tenant_id = 'acme' AND status = 'active'`, func(n uint64) bool { return n >= 4 }},
		{`SELECT count() FROM conversations FINAL WHERE tenant_id = 'acme' AND status = 'active'`, func(n uint64) bool { return n == 1 }},
	} {
		var n uint64
		if err := conn.QueryRow(ctx, c.query).Scan(&n); err != nil || !c.ok(n) {
			t.Fatalf("%s: %d, %v", c.query, n, err)
		}
	}
	return conn
}

func waitFor(t *testing.T, what string, done func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, state := done()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s: %s", what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// docsConversations returns the sample conversations of the docs as two
// rounds of events: the opening events of every conversation, then the rest.
//
//   - c-001: bot shop, web widget on desktop, Berlin; plan "pro"; reaches
//     checkout/address and checkout/pay and drops off at checkout/pay/n-pay;
//     tagged unidentified-response; closed by the visitor, engaged.
//   - c-002: bot support, WhatsApp on mobile web, Paris; plan "free"; handoff
//     and takeover by agent ann; goal purchase, lead; tags long-wait and
//     unidentified-response, label refund, marker vip; closed by the agent,
//     goal_completed and resolved.
//   - c-003: bot shop, Telegram in the app, Boston; plan "pro"; completes
//     checkout, goal purchase; cost in EUR; flagged; still active.
//   - c-004: bot support, web widget on mobile web, Hamburg, a test
//     conversation; handoff without an operator, then a stale timeout,
//     no_reply; drops off at checkout/address/n-address.
func docsConversations() (first, second []*eventv1.Envelope) {
	seq := 0
	type step struct {
		producer string
		payload  func(*eventv1.Envelope)
	}
	build := func(conv string, start time.Time, steps []step) []*eventv1.Envelope {
		var out []*eventv1.Envelope
		at := start
		for _, s := range steps {
			seq++
			e := &eventv1.Envelope{
				EventId:        fmt.Sprintf("00000000-0000-4000-8000-%012d", seq),
				TenantId:       "acme",
				ConversationId: conv,
				OccurredAt:     timestamppb.New(at),
				RecordedAt:     timestamppb.New(at.Add(150 * time.Millisecond)),
				Producer:       s.producer,
			}
			s.payload(e)
			out = append(out, e)
			at = at.Add(7*time.Second + 250*time.Millisecond)
		}
		return out
	}
	ing := func(p func(*eventv1.Envelope)) step { return step{"ingest", p} }
	life := func(p func(*eventv1.Envelope)) step { return step{"lifecycle", p} }
	tagging := func(p func(*eventv1.Envelope)) step { return step{"tagging", p} }
	started := func(cs *eventv1.ConversationStarted) func(*eventv1.Envelope) {
		return func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: cs}
		}
	}
	msg := func(m *eventv1.MessagePosted) func(*eventv1.Envelope) {
		return func(e *eventv1.Envelope) { e.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: m} }
	}
	visitor := func(id, text, intent string, unidentified bool) func(*eventv1.Envelope) {
		m := &eventv1.MessagePosted{MessageId: id, Role: eventv1.Role_ROLE_VISITOR, Text: text, Unidentified: unidentified}
		if intent != "" {
			m.Intent = &eventv1.Intent{Name: intent, Confidence: 0.87}
		}
		return msg(m)
	}
	bot := func(id, text, node string, ms uint32) func(*eventv1.Envelope) {
		return msg(&eventv1.MessagePosted{MessageId: id, Role: eventv1.Role_ROLE_BOT, Text: text, NodeId: node, ResponseTimeMs: ms})
	}
	agent := func(id, text string, ms uint32) func(*eventv1.Envelope) {
		return msg(&eventv1.MessagePosted{MessageId: id, Role: eventv1.Role_ROLE_AGENT, Text: text, AgentId: "ann", ResponseTimeMs: ms, Paid: true})
	}
	set := func(p any) func(*eventv1.Envelope) {
		return func(e *eventv1.Envelope) {
			switch p := p.(type) {
			case *eventv1.PageViewed:
				e.Payload = &eventv1.Envelope_PageViewed{PageViewed: p}
			case *eventv1.VariablesCaptured:
				e.Payload = &eventv1.Envelope_VariablesCaptured{VariablesCaptured: p}
			case *eventv1.FlowStarted:
				e.Payload = &eventv1.Envelope_FlowStarted{FlowStarted: p}
			case *eventv1.FlowStep:
				e.Payload = &eventv1.Envelope_FlowStep{FlowStep: p}
			case *eventv1.FlowCompleted:
				e.Payload = &eventv1.Envelope_FlowCompleted{FlowCompleted: p}
			case *eventv1.FlowDropped:
				e.Payload = &eventv1.Envelope_FlowDropped{FlowDropped: p}
			case *eventv1.GoalReached:
				e.Payload = &eventv1.Envelope_GoalReached{GoalReached: p}
			case *eventv1.LeadCaptured:
				e.Payload = &eventv1.Envelope_LeadCaptured{LeadCaptured: p}
			case *eventv1.UsageRecorded:
				e.Payload = &eventv1.Envelope_UsageRecorded{UsageRecorded: p}
			case *eventv1.HandoffRequested:
				e.Payload = &eventv1.Envelope_HandoffRequested{HandoffRequested: p}
			case *eventv1.AgentJoined:
				e.Payload = &eventv1.Envelope_AgentJoined{AgentJoined: p}
			case *eventv1.OperatorNoResponse:
				e.Payload = &eventv1.Envelope_OperatorNoResponse{OperatorNoResponse: p}
			case *eventv1.ConversationEnded:
				e.Payload = &eventv1.Envelope_ConversationEnded{ConversationEnded: p}
			case *eventv1.EngagementClassified:
				e.Payload = &eventv1.Envelope_EngagementClassified{EngagementClassified: p}
			case *eventv1.TagApplied:
				e.Payload = &eventv1.Envelope_TagApplied{TagApplied: p}
			case *eventv1.LabelAdded:
				e.Payload = &eventv1.Envelope_LabelAdded{LabelAdded: p}
			case *eventv1.MarkerAdded:
				e.Payload = &eventv1.Envelope_MarkerAdded{MarkerAdded: p}
			case *eventv1.Flagged:
				e.Payload = &eventv1.Envelope_Flagged{Flagged: p}
			default:
				panic(fmt.Sprintf("docs test: no payload case for %T", p))
			}
		}
	}
	day := func(d, h, m int) time.Time { return time.Date(2026, time.January, d, h, m, 0, 0, time.UTC) }
	visitorOf := func(tok, name string) *eventv1.Visitor {
		return &eventv1.Visitor{Token: tok, DisplayName: name, Locale: "en-GB", UserAgent: "Mozilla/5.0"}
	}

	convs := []struct {
		id    string
		start time.Time
		open  []step // round one
		rest  []step // round two
	}{
		{"c-001", day(14, 9, 0), []step{
			ing(started(&eventv1.ConversationStarted{BotId: "shop", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET, Platform: eventv1.Platform_PLATFORM_DESKTOP,
				Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE, DeviceType: "desktop", Visitor: visitorOf("v-1", "Brave Fox"),
				Location: &eventv1.Location{Country: "DE", Region: "BE", City: "Berlin"}, PageUrl: "https://shop.example/", Referrer: "https://search.example/",
				Variables: map[string]string{"plan": "pro", "source": "ads"}})),
			ing(bot("m1", "Hello, how can I help?", "welcome", 0)),
			ing(visitor("m2", "Where is my order?", "order_status", false)),
		}, []step{
			ing(bot("m3", "Let me check.", "order-lookup", 800)),
			ing(set(&eventv1.PageViewed{Url: "https://shop.example/checkout"})),
			ing(set(&eventv1.FlowStarted{FlowId: "checkout"})),
			ing(set(&eventv1.FlowStep{FlowId: "checkout", StepId: "address", NodeId: "n-address"})),
			ing(set(&eventv1.FlowStep{FlowId: "checkout", StepId: "pay", NodeId: "n-pay"})),
			ing(visitor("m4", "asdf qwer", "", true)),
			ing(bot("m5", "Sorry, I did not get that.", "fallback", 300)),
			ing(set(&eventv1.FlowDropped{FlowId: "checkout", StepId: "pay", NodeId: "n-pay"})),
			ing(set(&eventv1.UsageRecorded{Model: "small", InputTokens: 1200, OutputTokens: 300, CostMicros: 1450})),
			tagging(set(&eventv1.TagApplied{Tag: "unidentified-response"})),
			life(set(&eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_VISITOR_CLOSED})),
			life(set(&eventv1.EngagementClassified{Engagement: eventv1.Engagement_ENGAGEMENT_ENGAGED, VisitorMessages: 2})),
		}},
		{"c-002", day(14, 15, 30), []step{
			ing(started(&eventv1.ConversationStarted{BotId: "support", Channel: eventv1.Channel_CHANNEL_WHATSAPP, Platform: eventv1.Platform_PLATFORM_MOBILE_WEB,
				Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE, DeviceType: "mobile", Visitor: visitorOf("v-2", "Calm Owl"),
				Location: &eventv1.Location{Country: "FR", Region: "IDF", City: "Paris"}, Variables: map[string]string{"plan": "free"}})),
			ing(visitor("m1", "I want a refund", "refund", false)),
		}, []step{
			ing(bot("m2", "I will get a colleague.", "handoff", 500)),
			ing(set(&eventv1.HandoffRequested{Reason: "refund", Queue: "billing"})),
			ing(set(&eventv1.AgentJoined{AgentId: "ann", AgentName: "Ann"})),
			ing(agent("m3", "Hi, Ann here. Let me look.", 45000)),
			ing(visitor("m4", "Thanks!", "thanks", false)),
			ing(agent("m5", "Done, refunded.", 12000)),
			ing(set(&eventv1.GoalReached{GoalId: "purchase", ValueMicros: 25_000_000, Currency: "USD"})),
			ing(set(&eventv1.LeadCaptured{Email: "visitor@example.com"})),
			ing(set(&eventv1.UsageRecorded{Model: "small", InputTokens: 800, OutputTokens: 200, CostMicros: 900, Currency: "USD", PaidMessages: 1})),
			tagging(set(&eventv1.TagApplied{Tag: "long-wait"})),
			tagging(set(&eventv1.TagApplied{Tag: "unidentified-response"})),
			tagging(set(&eventv1.LabelAdded{Label: "refund", AddedBy: "ann"})),
			ing(set(&eventv1.MarkerAdded{Marker: "vip"})),
			life(set(&eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_AGENT_CLOSED, EndedBy: "ann"})),
			life(set(&eventv1.EngagementClassified{Engagement: eventv1.Engagement_ENGAGEMENT_GOAL_COMPLETED, Resolved: true, VisitorMessages: 2, GoalsReached: 1})),
		}},
		{"c-003", day(15, 10, 0), []step{
			ing(started(&eventv1.ConversationStarted{BotId: "shop", Channel: eventv1.Channel_CHANNEL_TELEGRAM, Platform: eventv1.Platform_PLATFORM_APP,
				Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE, Visitor: visitorOf("v-3", "Quick Hare"),
				Location: &eventv1.Location{Country: "US", Region: "MA", City: "Boston"}})),
			ing(bot("m1", "Hi! Ask me anything.", "welcome", 0)),
		}, []step{
			ing(visitor("m2", "How much is the pro plan?", "pricing", false)),
			ing(bot("m3", "The pro plan is 20 USD a month.", "pricing-answer", 650)),
			ing(set(&eventv1.VariablesCaptured{Variables: map[string]string{"plan": "pro", "email_domain": "example.com"}, Source: eventv1.VariableSource_VARIABLE_SOURCE_EXTRACTED})),
			ing(set(&eventv1.FlowStarted{FlowId: "checkout"})),
			ing(set(&eventv1.FlowStep{FlowId: "checkout", StepId: "address", NodeId: "n-address"})),
			ing(set(&eventv1.FlowStep{FlowId: "checkout", StepId: "pay", NodeId: "n-pay"})),
			ing(set(&eventv1.FlowCompleted{FlowId: "checkout"})),
			ing(set(&eventv1.GoalReached{GoalId: "purchase", ValueMicros: 20_000_000})),
			ing(visitor("m4", "blorp", "", true)),
			ing(bot("m5", "Sorry, could you rephrase?", "fallback", 400)),
			ing(set(&eventv1.UsageRecorded{Model: "large", InputTokens: 2000, OutputTokens: 700, CostMicros: 3100, Currency: "EUR"})),
			tagging(set(&eventv1.TagApplied{Tag: "unidentified-response"})),
			tagging(set(&eventv1.Flagged{FlaggedBy: "ann", Note: "check pricing answer"})),
		}},
		{"c-004", day(16, 8, 0), []step{
			ing(started(&eventv1.ConversationStarted{BotId: "support", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET, Platform: eventv1.Platform_PLATFORM_MOBILE_WEB,
				Type: eventv1.ConversationType_CONVERSATION_TYPE_TEST, DeviceType: "mobile", Visitor: visitorOf("v-1", "Brave Fox"),
				Location: &eventv1.Location{Country: "DE", Region: "HH", City: "Hamburg"}, PageUrl: "https://shop.example/help",
				Variables: map[string]string{"source": "newsletter"}})),
		}, []step{
			ing(bot("m1", "Hello, how can I help?", "welcome", 0)),
			ing(set(&eventv1.FlowStarted{FlowId: "checkout"})),
			ing(set(&eventv1.FlowStep{FlowId: "checkout", StepId: "address", NodeId: "n-address"})),
			ing(set(&eventv1.FlowDropped{FlowId: "checkout", StepId: "address", NodeId: "n-address"})),
			ing(set(&eventv1.HandoffRequested{Reason: "visitor asked", Queue: "support"})),
			life(set(&eventv1.OperatorNoResponse{WaitedSeconds: 300})),
			life(set(&eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_STALE_TIMEOUT})),
			life(set(&eventv1.EngagementClassified{Engagement: eventv1.Engagement_ENGAGEMENT_NO_REPLY})),
		}},
	}
	for _, c := range convs {
		evs := build(c.id, c.start, append(append([]step{}, c.open...), c.rest...))
		first = append(first, evs[:len(c.open)]...)
		second = append(second, evs[len(c.open):]...)
	}
	return first, second
}
