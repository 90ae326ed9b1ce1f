package reporting_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/pgstore"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// publishAll publishes payloads as events of one conversation of tenant, a
// second apart from start; a string among them sets the producer of the
// events after it (ingest before the first).
func (f *fixture) publishAll(t *testing.T, tenant, conv string, start time.Time, events ...any) []time.Time {
	t.Helper()
	var times []time.Time
	producer := "ingest"
	at := start
	for _, e := range events {
		if p, ok := e.(string); ok {
			producer = p
			continue
		}
		env := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: tenant, ConversationId: conv, OccurredAt: timestamppb.New(at), Producer: producer}
		eventbus.SetPayload(env, e.(proto.Message))
		if _, err := f.bus.Publish(context.Background(), env); err != nil {
			t.Fatal(err)
		}
		times = append(times, at)
		at = at.Add(time.Second)
	}
	return times
}

// TestConversationDetail checks what GetConversation adds for one
// conversation (gRPC and HTTP/JSON): debug traces and the debug flag, lead
// records, variables with their sources, start page and referrer, usage per
// model with currencies kept apart, lifecycle's agent response times and
// the client's bot latency.
func TestConversationDetail(t *testing.T) {
	f := startEmpty(t)
	start := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	steps := []*eventv1.DebugStep{{Name: "nlu", Detail: "intent=greet", DurationMs: 12}, {Name: "action", Detail: "reply failed", DurationMs: 30, Error: true}}
	times := f.publishAll(t, "acme", "d1", start,
		&eventv1.ConversationStarted{BotId: "shop", PageUrl: "https://shop.example/landing?utm=x", Referrer: "https://search.example/q",
			Variables: map[string]string{"name": "Ann"}, DebugEnabled: true},
		&eventv1.MessagePosted{MessageId: "m1", Role: eventv1.Role_ROLE_VISITOR, Text: "hello"},
		&eventv1.DebugTrace{MessageId: "m1", Steps: steps},
		&eventv1.MessagePosted{MessageId: "b1", Role: eventv1.Role_ROLE_BOT, Text: "Hi!", ResponseTimeMs: 400},
		&eventv1.VariablesCaptured{Variables: map[string]string{"plan": "pro"}, Source: eventv1.VariableSource_VARIABLE_SOURCE_EXTRACTED},
		&eventv1.VariablesCaptured{Variables: map[string]string{"crm": "42"}, Source: eventv1.VariableSource_VARIABLE_SOURCE_API},
		&eventv1.MessagePosted{MessageId: "m2", Role: eventv1.Role_ROLE_VISITOR, Text: "I'm Ann, ann@x.io"},
		&eventv1.LeadCaptured{LeadId: "L1", Name: "Ann", Email: "ann@x.io", Phone: "+4930123", MessageId: "m2", Fields: map[string]string{"company": "X"}},
		&eventv1.MessagePosted{MessageId: "b2", Role: eventv1.Role_ROLE_BOT, Text: "Thanks", ResponseTimeMs: 600},
		&eventv1.UsageRecorded{Model: "gpt-4o", InputTokens: 1000, OutputTokens: 200, CostMicros: 5000},
		&eventv1.UsageRecorded{Model: "gpt-4o", InputTokens: 500, OutputTokens: 100, CostMicros: 2500, Currency: "USD"},
		&eventv1.UsageRecorded{Model: "claude", InputTokens: 300, OutputTokens: 50, CostMicros: 1000, Currency: "EUR"},
		&eventv1.HandoffRequested{},
		&eventv1.AgentJoined{AgentId: "ann"},
		&eventv1.MessagePosted{MessageId: "a1", Role: eventv1.Role_ROLE_AGENT, Text: "Ann here", ResponseTimeMs: 9999, AgentId: "ann"},
		"lifecycle",
		&eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_AGENT_CLOSED},
		&eventv1.EngagementClassified{Engagement: eventv1.Engagement_ENGAGEMENT_ENGAGED, FirstResponseMs: proto.Uint32(15000),
			AgentReplies: 2, AgentResponseMsSum: 30000, AverageResponseMs: 15000},
	)
	f.publishAll(t, "acme", "d2", start, &eventv1.UsageRecorded{Model: "claude", InputTokens: 10, CostMicros: 70, Currency: "EUR"},
		&eventv1.UsageRecorded{Model: "claude", InputTokens: 5, CostMicros: 30, Currency: "EUR"})
	f.waitProjected(t)

	want := &reportingv1.Conversation{
		DebugEnabled: true, StartPageUrl: "https://shop.example/landing?utm=x", Referrer: "https://search.example/q",
		DebugTraces: []*reportingv1.DebugTrace{{MessageId: "m1", OccurredAt: timestamppb.New(times[2]), Steps: steps}},
		LeadRecords: []*reportingv1.Lead{{LeadId: "L1", Name: "Ann", Email: "ann@x.io", Phone: "+4930123", MessageId: "m2",
			Fields: map[string]string{"company": "X"}, CapturedAt: timestamppb.New(times[7])}},
		VariableDetails: []*reportingv1.Variable{
			{Key: "crm", Value: "42", Source: eventv1.VariableSource_VARIABLE_SOURCE_API},
			{Key: "name", Value: "Ann", Source: eventv1.VariableSource_VARIABLE_SOURCE_PRE_CHAT_FORM},
			{Key: "plan", Value: "pro", Source: eventv1.VariableSource_VARIABLE_SOURCE_EXTRACTED},
		},
		Usage: []*reportingv1.ModelUsage{
			{Model: "gpt-4o", Currency: "USD", CostMicros: 5000 + 2500, InputTokens: 1500, OutputTokens: 300},
			{Model: "claude", Currency: "EUR", CostMicros: 1000, InputTokens: 300, OutputTokens: 50},
		},
		CostByCurrency: []*reportingv1.CurrencyCost{{Currency: "USD", CostMicros: 7500}, {Currency: "EUR", CostMicros: 1000}},
		Currency:       "", CostMicros: 0, InputTokens: 1800, OutputTokens: 350, Tokens: 2150,
		FirstResponseMs: 15000, AverageResponseMs: 30000 / 2, BotAverageResponseMs: (400 + 600) / 2,
	}
	pick := func(c *reportingv1.Conversation) *reportingv1.Conversation {
		return &reportingv1.Conversation{
			DebugEnabled: c.DebugEnabled, StartPageUrl: c.StartPageUrl, Referrer: c.Referrer, DebugTraces: c.DebugTraces, LeadRecords: c.LeadRecords,
			VariableDetails: c.VariableDetails, Usage: c.Usage, CostByCurrency: c.CostByCurrency, Currency: c.Currency, CostMicros: c.CostMicros,
			InputTokens: c.InputTokens, OutputTokens: c.OutputTokens, Tokens: c.Tokens,
			FirstResponseMs: c.FirstResponseMs, AverageResponseMs: c.AverageResponseMs, BotAverageResponseMs: c.BotAverageResponseMs,
		}
	}
	got, err := f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(want, pick(got)) {
		t.Errorf("gRPC detail:\n%v\nwant\n%v", pick(got), want)
	}
	tok := got.ShareUrl[strings.LastIndex(got.ShareUrl, "/")+1:]
	code, body := f.httpCall(t, http.MethodGet, "/v1/conversations/d1", f.key)
	if code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", code, body)
	}
	var viaHTTP reportingv1.Conversation
	if err := protojson.Unmarshal(body, &viaHTTP); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(want, pick(&viaHTTP)) {
		t.Errorf("HTTP detail:\n%v\nwant\n%v", pick(&viaHTTP), want)
	}

	// One currency: the conversation has a total in it.
	got, err = f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "d2"})
	if err != nil {
		t.Fatal(err)
	}
	if got.Currency != "EUR" || got.CostMicros != 100 || len(got.CostByCurrency) != 1 || got.DebugEnabled || len(got.DebugTraces) != 0 {
		t.Errorf("d2: currency %q cost %d by currency %v debug %v", got.Currency, got.CostMicros, got.CostByCurrency, got.DebugEnabled)
	}

	// A share link's viewer sees none of the personal or internal parts.
	shared, err := f.client.GetConversation(context.Background(), &reportingv1.GetConversationRequest{ShareToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	if len(shared.LeadRecords)+len(shared.DebugTraces)+len(shared.VariableDetails) != 0 || shared.StartPageUrl != "" || shared.Referrer != "" {
		t.Errorf("shared view keeps personal or internal parts: %v", shared)
	}
}

// TestModelPrices sets prices through the API (admin scope; gRPC and
// HTTP/JSON) and checks that usage sent without a cost is priced from its
// tokens in the price's currency, while usage with a cost keeps it.
func TestModelPrices(t *testing.T) {
	f := startEmpty(t)
	admin := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", f.adminKey)
	// A read key may not set prices; bad input names its field and stores nothing.
	if _, err := f.client.SetModelPrice(f.ctx(), &reportingv1.SetModelPriceRequest{Price: &reportingv1.ModelPrice{Model: "mini", Currency: "EUR"}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("read key: %v", err)
	}
	for field, p := range map[string]*reportingv1.ModelPrice{
		"price.model":                    {Currency: "EUR"},
		"price.currency":                 {Model: "mini", Currency: "euro"},
		"price.input_micros_per_million": {Model: "mini", Currency: "EUR", InputMicrosPerMillion: 1 << 63},
	} {
		_, err := f.client.SetModelPrice(admin, &reportingv1.SetModelPriceRequest{Price: p})
		if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), field+":") {
			t.Errorf("%s: %v", field, err)
		}
	}
	if l, err := f.client.ListModelPrices(admin, &reportingv1.ListModelPricesRequest{}); err != nil || len(l.Prices) != 0 {
		t.Fatalf("after refused sets: %v %v", l, err)
	}
	// mini: 0.40 EUR per million input tokens, 1.60 per million output tokens.
	if _, err := f.client.SetModelPrice(admin, &reportingv1.SetModelPriceRequest{Price: &reportingv1.ModelPrice{
		Model: "mini", Currency: "EUR", InputMicrosPerMillion: 400_000, OutputMicrosPerMillion: 1_600_000}}); err != nil {
		t.Fatal(err)
	}
	code, body := f.httpDo(t, http.MethodPut, "/v1/model-prices/big", f.adminKey,
		`{"price":{"currency":"USD","input_micros_per_million":"3000000","output_micros_per_million":"15000000"}}`)
	if code != http.StatusOK {
		t.Fatalf("HTTP set: %d %s", code, body)
	}
	code, body = f.httpCall(t, http.MethodGet, "/v1/model-prices", f.adminKey)
	var list reportingv1.ListModelPricesResponse
	if err := protojson.Unmarshal(body, &list); code != http.StatusOK || err != nil || len(list.Prices) != 2 ||
		list.Prices[0].Model != "big" || list.Prices[0].OutputMicrosPerMillion != 15_000_000 || list.Prices[1].Currency != "EUR" {
		t.Fatalf("HTTP list: %d %s %v", code, body, err)
	}

	// Setting prices is audited, listing them is not.
	if _, err := f.client.SetModelPrice(admin, &reportingv1.SetModelPriceRequest{Price: &reportingv1.ModelPrice{
		Model: "last", Currency: "EUR"}}); err != nil {
		t.Fatal(err)
	}
	pool, err := pgstore.Connect(context.Background(), config.Postgres{URL: f.pgURL, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		var sets, lists int
		if err := pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE method LIKE '%/SetModelPrice' AND code = 'OK'),
			count(*) FILTER (WHERE method LIKE '%/ListModelPrices') FROM audit_log WHERE tenant_id = 'ops'`).Scan(&sets, &lists); err != nil {
			t.Fatal(err)
		}
		if sets == 3 {
			if lists != 0 {
				t.Fatalf("%d list calls audited", lists)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit log: %d successful sets, want 3", sets)
		}
	}

	f.publishAll(t, "ops", "p1", time.Now().UTC().Add(-time.Minute),
		&eventv1.UsageRecorded{Model: "mini", InputTokens: 25_000, OutputTokens: 5_000},
		&eventv1.UsageRecorded{Model: "big", InputTokens: 1000, OutputTokens: 100, CostMicros: 99, Currency: "USD"},
		&eventv1.UsageRecorded{Model: "unpriced", InputTokens: 10})
	f.waitProjected(t)
	got, err := f.client.GetConversation(admin, &reportingv1.GetConversationRequest{ConversationId: "p1"})
	if err != nil {
		t.Fatal(err)
	}
	// 25,000 × 0.40 / 1e6 + 5,000 × 1.60 / 1e6 EUR = 0.018 EUR.
	want := []*reportingv1.ModelUsage{
		{Model: "mini", Currency: "EUR", CostMicros: 25_000*400_000/1_000_000 + 5_000*1_600_000/1_000_000, InputTokens: 25_000, OutputTokens: 5_000, CostEstimated: true},
		{Model: "big", Currency: "USD", CostMicros: 99, InputTokens: 1000, OutputTokens: 100},
		{Model: "unpriced", Currency: "USD", InputTokens: 10},
	}
	if len(got.Usage) != len(want) {
		t.Fatalf("usage %v", got.Usage)
	}
	for i := range want {
		if !proto.Equal(got.Usage[i], want[i]) {
			t.Errorf("usage line %d: %v, want %v", i, got.Usage[i], want[i])
		}
	}
	if got.Currency != "" || got.CostMicros != 0 || len(got.CostByCurrency) != 2 || got.CostByCurrency[0].CostMicros != 18_000 || got.CostByCurrency[1].CostMicros != 99 {
		t.Errorf("totals: %q %d %v", got.Currency, got.CostMicros, got.CostByCurrency)
	}
}
