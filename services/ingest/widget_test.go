package ingest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/tenancy"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// widgetAuth authenticates keys with the tenancy store and makes the keys in
// origins publishable, bound to those origins (until tenancy stores kinds).
type widgetAuth struct {
	store   *tenancy.Store
	mu      *sync.Mutex
	origins map[string][]string
}

func (a widgetAuth) Authenticate(ctx context.Context, key string) (grpcx.Principal, error) {
	p, err := a.store.Authenticate(ctx, key)
	if err != nil {
		return p, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if o, ok := a.origins[p.KeyID]; ok {
		p.Kind, p.AllowedOrigins = grpcx.KindPublishable, o
	}
	return p, nil
}

// startWidget runs ingest with a token secret and returns a publishable key
// of acme bound to https://shop.example.
func startWidget(t *testing.T, secret string) (*fixture, string) {
	t.Helper()
	auth := widgetAuth{mu: &sync.Mutex{}, origins: map[string][]string{}}
	f := start(t, func(c *ingest.Config) {
		c.TokenSecret = secret
		c.CORSOrigins = []string{"*"}
		c.Auth = func(s *tenancy.Store) grpcx.Authenticator { auth.store = s; return auth }
	})
	key, keyID, err := f.store.CreateAPIKey(context.Background(), "acme", "widget", []string{grpcx.ScopeIngest})
	if err != nil {
		t.Fatal(err)
	}
	auth.mu.Lock()
	auth.origins[keyID] = []string{"https://shop.example"}
	auth.mu.Unlock()
	return f, key
}

const shop = "https://shop.example"

func TestPublishableWidgetKey(t *testing.T) {
	f, widget := startWidget(t, "test-secret")
	post := func(path string, body string, header map[string]string) (int, string) {
		t.Helper()
		h := map[string]string{"Origin": shop}
		for k, v := range header {
			h[k] = v
		}
		resp, b := httpDo(t, "POST", f.httpURL+path, widget, []byte(body), h)
		return resp.StatusCode, string(b)
	}
	startBody := `{"client_event_id":"start","conversation":{"bot_id":"shop-bot","channel":"CHANNEL_WEB_WIDGET","visitor":{"token":"cookie-1"}}}`

	// Another site embedding the key is refused.
	if code, body := post("/v1/conversations/w-1:start", startBody, map[string]string{"Origin": "https://evil.example"}); code != http.StatusForbidden {
		t.Fatalf("start from another origin: %d %s", code, body)
	}
	// The happy widget flow: start, get the token, post, close.
	code, body := post("/v1/conversations/w-1:start", startBody, nil)
	var res struct {
		EventID           string `json:"event_id"`
		Duplicate         bool   `json:"duplicate"`
		ConversationToken string `json:"conversation_token"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &res) != nil || res.ConversationToken == "" {
		t.Fatalf("start: %d %s", code, body)
	}
	token := map[string]string{"Parley-Conversation-Token": res.ConversationToken}
	visitorMsg := `{"message":{"role":"ROLE_VISITOR","text":"where is my order?"}}`
	if code, body := post("/v1/conversations/w-1/messages", visitorMsg, nil); code != http.StatusForbidden || !strings.Contains(body, "events[0].conversation_id") {
		t.Fatalf("message without a token: %d %s", code, body)
	}
	if code, body := post("/v1/conversations/w-1/messages", visitorMsg, map[string]string{"Parley-Conversation-Token": "forged"}); code != http.StatusForbidden {
		t.Fatalf("message with a forged token: %d %s", code, body)
	}
	if code, body := post("/v1/conversations/w-1/messages", visitorMsg, token); code != 200 {
		t.Fatalf("visitor message: %d %s", code, body)
	}
	// Bot and agent messages, usage: refused, naming the field.
	if code, body := post("/v1/conversations/w-1/messages", `{"message":{"role":"ROLE_BOT","text":"pay here"}}`, token); code != http.StatusForbidden || !strings.Contains(body, "events[0].message_posted.role") {
		t.Fatalf("bot message: %d %s", code, body)
	}
	if code, body := post("/v1/conversations/w-1/usage", `{"usage":{"model":"m","input_tokens":5}}`, token); code != http.StatusForbidden || !strings.Contains(body, "events[0].payload") {
		t.Fatalf("usage: %d %s", code, body)
	}
	// The browser does not choose its own IP.
	if code, body := post("/v1/conversations/w-9:start", `{"conversation":{"visitor":{"ip":"8.8.8.8"}}}`, nil); code != http.StatusForbidden || !strings.Contains(body, "events[0].conversation_started.visitor.ip") {
		t.Fatalf("start with a visitor ip: %d %s", code, body)
	}
	if code, body := post("/v1/conversations/w-9:start", `{"conversation":{"debug_enabled":true}}`, nil); code != http.StatusForbidden || !strings.Contains(body, "events[0].conversation_started.debug_enabled") {
		t.Fatalf("start with debug on: %d %s", code, body)
	}
	// An exact resend of the start is a duplicate with the same token.
	code, body = post("/v1/conversations/w-1:start", startBody, nil)
	var again struct {
		Duplicate         bool   `json:"duplicate"`
		ConversationToken string `json:"conversation_token"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &again) != nil || !again.Duplicate || again.ConversationToken != res.ConversationToken {
		t.Fatalf("resent start: %d %s", code, body)
	}

	// A conversation the widget did not start: the server's.
	if _, err := f.client.StartConversation(f.ctx(), &ingestv1.StartConversationRequest{ConversationId: "other", Conversation: &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Token: "cookie-2"}}}); err != nil {
		t.Fatal(err)
	}
	if code, body := post("/v1/conversations/other:close", `{"close":{"closed_by":"ACTOR_VISITOR"}}`, token); code != http.StatusForbidden {
		t.Fatalf("close of another conversation with w-1's token: %d %s", code, body)
	}
	if code, body := post("/v1/conversations/other:start", `{"conversation":{"visitor":{"token":"cookie-2"}}}`, nil); code != http.StatusForbidden || !strings.Contains(body, "already exists") {
		t.Fatalf("start of an existing conversation: %d %s", code, body)
	}
	// Also when its events hold no start.
	if _, err := f.client.PostMessage(f.ctx(), &ingestv1.PostMessageRequest{ConversationId: "no-start", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hi"}}); err != nil {
		t.Fatal(err)
	}
	if code, body := post("/v1/conversations/no-start:start", `{"conversation":{}}`, nil); code != http.StatusForbidden || !strings.Contains(body, "already exists") {
		t.Fatalf("start of a conversation without a stored start: %d %s", code, body)
	}
	if code, body := post("/v1/conversations/w-1:close", `{"close":{"closed_by":"ACTOR_AGENT"}}`, token); code != http.StatusForbidden || !strings.Contains(body, "closed_by") {
		t.Fatalf("close as agent: %d %s", code, body)
	}

	// gRPC: the origin comes from metadata; AppendStream is refused.
	wctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+widget)
	msg := &ingestv1.PostMessageRequest{ConversationId: "w-1", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "still there?"}}
	if _, err := f.client.PostMessage(metadata.AppendToOutgoingContext(wctx, "parley-conversation-token", res.ConversationToken), msg); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("gRPC without origin: %v", err)
	}
	gctx := metadata.AppendToOutgoingContext(wctx, "origin", shop, "parley-conversation-token", res.ConversationToken)
	if _, err := f.client.PostMessage(gctx, msg); err != nil {
		t.Fatalf("gRPC with origin and token: %v", err)
	}
	// One request may start a conversation and post to it: the start's
	// result carries the token, the message needs none.
	batch, err := f.client.Append(metadata.AppendToOutgoingContext(wctx, "origin", shop), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{
		{ConversationId: "w-2", Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{}}},
		visitor("w-2", "hello in the same request")}})
	if err != nil || batch.Results[0].ConversationToken == "" || batch.Results[1].ConversationToken != "" || batch.Results[0].ConversationToken == res.ConversationToken {
		t.Fatalf("start and post in one request: %v %v", batch, err)
	}
	stream, err := f.client.AppendStream(gctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&ingestv1.AppendStreamRequest{Events: []*eventv1.Envelope{visitor("w-1", "streamed")}})
	if _, err := stream.CloseAndRecv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("AppendStream with a publishable key: %v", err)
	}
	// The Rasa endpoint is for servers.
	if code, body := post("/v1/rasa/events", `{"event":"user","sender_id":"w-1","timestamp":1767612350.0,"text":"hi"}`, token); code != http.StatusForbidden {
		t.Fatalf("rasa with a publishable key: %d %s", code, body)
	}
	if code, body := post("/v1/conversations/w-1:close", `{"close":{"closed_by":"ACTOR_VISITOR"}}`, token); code != 200 {
		t.Fatalf("visitor close: %d %s", code, body)
	}
	// Server keys keep their power: a bot message without any token.
	if _, err := f.client.PostMessage(f.ctx(), &ingestv1.PostMessageRequest{ConversationId: "w-1", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "bye"}}); err != nil {
		t.Fatalf("server key: %v", err)
	}

	var kinds []string
	for _, e := range f.stored(t) {
		kinds = append(kinds, e.ConversationId+"/"+e.Kind)
	}
	want := "w-1/conversation_started w-1/message_posted other/conversation_started no-start/message_posted w-1/message_posted w-2/conversation_started w-2/message_posted w-1/conversation_closed w-1/message_posted"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("stored %v\nwant     %s", kinds, want)
	}
}

// Without a token secret, publishable keys are refused; server keys work.
func TestPublishableKeysNeedATokenSecret(t *testing.T) {
	f, widget := startWidget(t, "")
	resp, body := httpDo(t, "POST", f.httpURL+"/v1/conversations/w-1:start", widget, []byte(`{"conversation":{}}`), map[string]string{"Origin": shop})
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "WIDGET_KEYS_DISABLED") {
		t.Fatalf("publishable key without a secret: %d %s", resp.StatusCode, body)
	}
	if _, err := f.client.StartConversation(f.ctx(), &ingestv1.StartConversationRequest{ConversationId: "s-1"}); err != nil {
		t.Fatal(err)
	}
}
