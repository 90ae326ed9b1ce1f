package reporting_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// traced is a trace id the test publishes its events under.
var traced = trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}

// publishConversation publishes a conversation of tenant acme with a
// visitor token, a variable, a page view, an agent and n messages, under a
// known trace id, and waits until it is projected.
func (f *fixture) publishConversation(t *testing.T, id string, n int) {
	t.Helper()
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: traced, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), sc)
	at := f.now.Add(-time.Hour)
	pub := func(p func(e *eventv1.Envelope)) {
		e := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: id, OccurredAt: timestamppb.New(at), Producer: "ingest"}
		p(e)
		at = at.Add(time.Second)
		if _, err := f.bus.Publish(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	pub(func(e *eventv1.Envelope) {
		e.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{
			BotId: "shop", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET, Visitor: &eventv1.Visitor{Token: "visitor-secret-token"},
			PageUrl: "https://shop.example/account?email=ann@example.com"}}
	})
	pub(func(e *eventv1.Envelope) {
		e.Payload = &eventv1.Envelope_VariablesCaptured{VariablesCaptured: &eventv1.VariablesCaptured{Variables: map[string]string{"email": "ann@example.com"}}}
	})
	pub(func(e *eventv1.Envelope) {
		e.Payload = &eventv1.Envelope_AgentJoined{AgentJoined: &eventv1.AgentJoined{AgentId: "agent-7", AgentName: "Ann"}}
	})
	for i := range n {
		pub(func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{
				Role: eventv1.Role_ROLE_AGENT, Text: fmt.Sprintf("message %d", i), AgentId: "agent-7"}}
		})
	}
	f.waitProjected(t)
}

func TestShareLinksAreRecordedRevocableAndRedacted(t *testing.T) {
	f := startEmpty(t)
	f.publishConversation(t, "sh-1", 3)
	f.publishConversation(t, "sh-2", 1)
	// The key's view is complete, with a recorded share link.
	full, err := f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "sh-1"})
	if err != nil {
		t.Fatal(err)
	}
	if full.Variables["email"] != "ann@example.com" || full.Summary.VisitorToken != "visitor-secret-token" || len(full.TraceIds) != 1 ||
		full.TraceIds[0] != traced.String() || full.Messages[0].EventId == "" || full.Messages[0].AgentId != "agent-7" || len(full.PageUrls) == 0 {
		t.Fatalf("full view: %v", full)
	}
	if full.ShareUrl == "" || full.ShareLinkId == "" {
		t.Fatalf("no share link: %v", full)
	}
	tok := full.ShareUrl[strings.LastIndex(full.ShareUrl, "/")+1:]
	// Viewing again reuses the key's link rather than minting another.
	again, err := f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "sh-1"})
	if err != nil || again.ShareLinkId != full.ShareLinkId {
		t.Fatalf("second view: %v %v", again.GetShareLinkId(), err)
	}
	other, err := f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "sh-2"})
	if err != nil {
		t.Fatal(err)
	}

	// The shared view: no new link, nothing identifying.
	shared, err := f.client.GetConversation(context.Background(), &reportingv1.GetConversationRequest{ShareToken: tok})
	if err != nil {
		t.Fatal(err)
	}
	if shared.ShareUrl != "" || shared.ShareLinkId != "" || shared.ShareExpiresAt != nil {
		t.Fatalf("a share token minted a link: %q", shared.ShareUrl)
	}
	if len(shared.Variables) != 0 || shared.Summary.VisitorToken != "" || len(shared.TraceIds) != 0 || len(shared.PageUrls) != 0 || len(shared.Agents) != 0 {
		t.Fatalf("shared view leaks: %v", shared)
	}
	if len(shared.Messages) != 3 || shared.Messages[0].Text != "message 0" || shared.Messages[0].EventId != "" || shared.Messages[0].AgentId != "" {
		t.Fatalf("shared messages: %v", shared.Messages)
	}
	// Also over HTTP, where the share link opens.
	code, body := f.httpCall(t, "GET", "/v1/shared/"+tok, "")
	if code != 200 || strings.Contains(string(body), "visitor-secret-token") || strings.Contains(string(body), "ann@example.com") ||
		strings.Contains(string(body), traced.String()) || strings.Contains(string(body), "share_url") {
		t.Fatalf("shared over HTTP: %d %s", code, body)
	}

	// The tenant lists its links: who minted them, when they expire.
	list, err := f.client.ListShareLinks(f.ctx(), &reportingv1.ListShareLinksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Links) != 2 || list.Links[0].LinkId != other.ShareLinkId || list.Links[1].LinkId != full.ShareLinkId {
		t.Fatalf("links: %v", list.Links)
	}
	l := list.Links[1]
	if l.ConversationId != "sh-1" || l.CreatedByKeyId != keyID(f.key) || !l.ExpiresAt.AsTime().Equal(full.ShareExpiresAt.AsTime()) || l.RevokedAt != nil {
		t.Fatalf("link: %v", l)
	}
	page, err := f.client.ListShareLinks(f.ctx(), &reportingv1.ListShareLinksRequest{PageSize: 1})
	if err != nil || len(page.Links) != 1 || page.NextPageToken == "" {
		t.Fatalf("first page: %v %v", page, err)
	}
	page, err = f.client.ListShareLinks(f.ctx(), &reportingv1.ListShareLinksRequest{PageSize: 1, PageToken: page.NextPageToken})
	if err != nil || len(page.Links) != 1 || page.Links[0].LinkId != full.ShareLinkId || page.NextPageToken != "" {
		t.Fatalf("second page: %v %v", page, err)
	}
	byConv, err := f.client.ListShareLinks(f.ctx(), &reportingv1.ListShareLinksRequest{ConversationId: "sh-2"})
	if err != nil || len(byConv.Links) != 1 || byConv.Links[0].LinkId != other.ShareLinkId {
		t.Fatalf("links of sh-2: %v %v", byConv, err)
	}
	// Another tenant neither sees nor revokes them.
	globex := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", f.globexKey)
	if res, err := f.client.ListShareLinks(globex, &reportingv1.ListShareLinksRequest{}); err != nil || len(res.Links) != 0 {
		t.Fatalf("globex lists: %v %v", res, err)
	}
	if _, err := f.client.RevokeShareLink(globex, &reportingv1.RevokeShareLinkRequest{LinkId: full.ShareLinkId}); status.Code(err) != codes.NotFound {
		t.Fatalf("globex revokes: %v", err)
	}

	// Revoking one link stops it at once, over gRPC and HTTP; the other works.
	code, body = f.httpCall(t, "POST", "/v1/share-links/"+full.ShareLinkId+":revoke", f.key)
	var revoked map[string]any
	if code != 200 || json.Unmarshal(body, &revoked) != nil || revoked["revoked_at"] == nil {
		t.Fatalf("revoke over HTTP: %d %s", code, body)
	}
	if _, err := f.client.GetConversation(context.Background(), &reportingv1.GetConversationRequest{ShareToken: tok}); status.Code(err) != codes.PermissionDenied ||
		!strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked link over gRPC: %v", err)
	}
	if code, _ := f.httpCall(t, "GET", "/v1/shared/"+tok, ""); code != http.StatusForbidden {
		t.Fatalf("revoked link over HTTP: %d", code)
	}
	otherTok := other.ShareUrl[strings.LastIndex(other.ShareUrl, "/")+1:]
	if _, err := f.client.GetConversation(context.Background(), &reportingv1.GetConversationRequest{ShareToken: otherTok}); err != nil {
		t.Fatalf("the other link: %v", err)
	}
	// The revoked link is listed as such; viewing again mints a new one.
	_, body = f.httpCall(t, "GET", "/v1/share-links?conversation_id=sh-1", f.key)
	var listed struct {
		Links []struct {
			LinkID    string `json:"link_id"`
			RevokedAt string `json:"revoked_at"`
		} `json:"links"`
	}
	if json.Unmarshal(body, &listed) != nil || len(listed.Links) != 1 || listed.Links[0].RevokedAt == "" {
		t.Fatalf("listed over HTTP: %s", body)
	}
	fresh, err := f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "sh-1"})
	if err != nil || fresh.ShareLinkId == "" || fresh.ShareLinkId == full.ShareLinkId {
		t.Fatalf("after revocation: %v %v", fresh.GetShareLinkId(), err)
	}
	if _, err := f.client.RevokeShareLink(f.ctx(), &reportingv1.RevokeShareLinkRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no link id: %v", err)
	}
}

// httpCall calls reporting's HTTP API (with key unless empty) and returns
// the status and body.
func (f *fixture) httpCall(t *testing.T, method, path, key string) (int, []byte) {
	t.Helper()
	return f.httpDo(t, method, path, key, "")
}

// httpDo is httpCall with a request body (none when empty).
func (f *fixture) httpDo(t *testing.T, method, path, key, body string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.httpURL+path, r)
	if key != "" {
		req.Header.Set("X-Api-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

// keyID is the id part of a tenancy key (pk_<id>_<secret>).
func keyID(key string) string {
	parts := strings.Split(key, "_")
	return parts[1]
}

// HTTP spans are named by route template: a share token never reaches a
// span's name or attributes.
func TestHTTPSpansUseRouteTemplates(t *testing.T) {
	f := startEmpty(t)
	rec := tracetest.NewSpanRecorder()
	f.cfg.Telemetry.TracerProvider.RegisterSpanProcessor(rec)
	f.publishConversation(t, "sp-1", 1)
	c, err := f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "sp-1"})
	if err != nil {
		t.Fatal(err)
	}
	tok := c.ShareUrl[strings.LastIndex(c.ShareUrl, "/")+1:]
	if code, body := f.httpCall(t, "GET", "/v1/shared/"+tok, ""); code != 200 {
		t.Fatalf("share link: %d %s", code, body)
	}
	if code, body := f.httpCall(t, "GET", "/v1/conversations/sp-1", f.key); code != 200 {
		t.Fatalf("conversation: %d %s", code, body)
	}
	names := map[string]bool{}
	for _, s := range rec.Ended() {
		names[s.Name()] = true
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.Emit(), tok) || strings.Contains(a.Value.Emit(), tok[:20]) {
				t.Fatalf("span %q attribute %s holds the share token", s.Name(), a.Key)
			}
		}
		if strings.Contains(s.Name(), tok[:20]) {
			t.Fatalf("span name %q holds the share token", s.Name())
		}
	}
	if !names["GET /v1/shared/{share_token}"] || !names["GET /v1/conversations/{conversation_id}"] {
		t.Fatalf("span names: %v", names)
	}
}

// Requests that can never succeed are InvalidArgument naming the field, not
// Unavailable.
func TestImpossibleRequestsAreInvalid(t *testing.T) {
	f := startEmpty(t)
	f.publishConversation(t, "iv-1", 1)
	long := strings.Repeat("😀", 256) // 256 characters, 1 KiB
	many := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%03d", i) + long[12:]
		}
		return out
	}
	for _, c := range []struct {
		name, field string
		f           *reportingv1.Filter
	}{
		{"server's Local zone", "filter.time_range.time_zone", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "today", TimeZone: "Local"}}},
		{"garbage zone", "filter.time_range.time_zone", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "today", TimeZone: "Mars/Olympus_Mons"}}},
		{"from before 1970", "filter.time_range.from", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "custom",
			From: timestamppb.New(time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC))}}},
		{"to after 2106", "filter.time_range.to", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "custom",
			From: timestamppb.New(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)), To: timestamppb.New(time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC))}}},
		{"from after 2106", "filter.time_range.from", &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "custom",
			From: timestamppb.New(time.Date(2107, 1, 1, 0, 0, 0, 0, time.UTC))}}},
		// Each field within its own limits, together past ClickHouse's
		// max_query_size.
		{"filter too large", "filter", allTime(&reportingv1.Filter{BotIds: many(100), Tags: many(100), Labels: many(100)})},
	} {
		for method, call := range map[string]func() error{
			"ListConversations": func() error {
				_, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: c.f})
				return err
			},
			"GetDashboard": func() error {
				_, err := f.client.GetDashboard(f.ctx(), &reportingv1.GetDashboardRequest{Filter: c.f})
				return err
			},
			"RunReport": func() error {
				_, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: "sessions", Filter: c.f})
				return err
			},
		} {
			if field := badField(call()); field != c.field {
				t.Errorf("%s, %s: field %q, want %q", c.name, method, field, c.field)
			}
		}
	}
	// Within bounds, the same kind of range works.
	if _, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "custom",
		From: timestamppb.New(time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)), To: timestamppb.New(time.Date(2106, 1, 1, 0, 0, 0, 0, time.UTC))}}}); err != nil {
		t.Fatalf("widest range: %v", err)
	}
	if _, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: allTime(&reportingv1.Filter{BotIds: many(10)})}); err != nil {
		t.Fatalf("large filter within the limit: %v", err)
	}
	for _, c := range []struct {
		field string
		req   *reportingv1.GetConversationRequest
	}{
		{"page_size", &reportingv1.GetConversationRequest{ConversationId: "iv-1", PageSize: 2001}},
		{"page_token", &reportingv1.GetConversationRequest{ConversationId: "iv-1", PageToken: "garbage"}},
	} {
		_, err := f.client.GetConversation(f.ctx(), c.req)
		if field := badField(err); field != c.field {
			t.Errorf("GetConversation %v: %v", c.req, err)
		}
	}
}

// badField is the field an InvalidArgument error names ("" for any other).
func badField(err error) string {
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		return fmt.Sprintf("(%s: %s)", st.Code(), st.Message())
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) > 0 {
			return br.FieldViolations[0].Field
		}
	}
	return "(no field)"
}

// A long transcript comes in pages, in order, each message once.
func TestTranscriptPages(t *testing.T) {
	f := startEmpty(t)
	f.publishConversation(t, "pg-1", 7)
	var texts []string
	token := ""
	pages := 0
	for {
		c, err := f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "pg-1", PageSize: 3, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if len(c.Messages) > 3 || c.Summary.GetConversationId() != "pg-1" {
			t.Fatalf("page %d: %v", pages, c)
		}
		for _, m := range c.Messages {
			texts = append(texts, m.Text)
		}
		if token = c.NextPageToken; token == "" {
			break
		}
		if pages > 5 {
			t.Fatal("too many pages")
		}
	}
	var want []string
	for i := range 7 {
		want = append(want, fmt.Sprintf("message %d", i))
	}
	if pages != 3 || strings.Join(texts, "|") != strings.Join(want, "|") {
		t.Fatalf("%d pages: %v", pages, texts)
	}
	// The default page holds them all.
	c, err := f.client.GetConversation(f.ctx(), &reportingv1.GetConversationRequest{ConversationId: "pg-1"})
	if err != nil || len(c.Messages) != 7 || c.NextPageToken != "" {
		t.Fatalf("default page: %d %q %v", len(c.GetMessages()), c.GetNextPageToken(), err)
	}
}
