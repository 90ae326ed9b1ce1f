package ingest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// stored reads every envelope in PARLEY_CONV, in stream order.
func (f *fixture) stored(t *testing.T) []*eventv1.Envelope {
	t.Helper()
	nc, err := nats.Connect(f.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), eventbus.ConvStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []*eventv1.Envelope
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		env := &eventv1.Envelope{}
		if err := proto.Unmarshal(m.Data, env); err != nil {
			t.Fatal(err)
		}
		if want := eventbus.ConvSubject(env.TenantId, env.ConversationId, env.Kind); m.Subject != want || m.Header.Get("Nats-Msg-Id") != env.TenantId+"/"+env.EventId {
			t.Fatalf("seq %d: subject %s msg id %s; want %s and %s/%s", seq, m.Subject, m.Header.Get("Nats-Msg-Id"), want, env.TenantId, env.EventId)
		}
		out = append(out, env)
	}
	return out
}

func TestRetriesAreDuplicates(t *testing.T) {
	f := start(t)
	post := func(clientID string) *ingestv1.EventResult {
		t.Helper()
		res, err := f.client.PostMessage(f.ctx(), &ingestv1.PostMessageRequest{ConversationId: "c1", ClientEventId: clientID, Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hello"}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	first := post("msg-1")
	again := post("msg-1")
	if first.Duplicate || !again.Duplicate || again.EventId != first.EventId || again.StreamSequence != first.StreamSequence {
		t.Fatalf("retry by client id: first %v, again %v", first, again)
	}
	// A batch retried after a lost response: stored events are duplicates,
	// the new one is stored.
	id1, id2 := eventbus.NewEventID(), eventbus.NewEventID()
	withID := func(id, text string) *eventv1.Envelope { e := visitor("c2", text); e.EventId = id; return e }
	if _, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{withID(id1, "a"), withID(id2, "b")}}); err != nil {
		t.Fatal(err)
	}
	res, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{withID(id1, "a"), withID(id2, "b"), visitor("c2", "c")}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Results[0].Duplicate || !res.Results[1].Duplicate || res.Results[2].Duplicate {
		t.Fatalf("retried batch: %v", res.Results)
	}
	if got := f.streamMsgs(t); got != 4 {
		t.Fatalf("stream holds %d, want 4", got)
	}
}

func TestEveryValidationError(t *testing.T) {
	f := start(t)
	now := time.Now()
	msg := func(mut func(e *eventv1.Envelope, m *eventv1.MessagePosted)) *eventv1.Envelope {
		m := &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "ok"}
		e := &eventv1.Envelope{ConversationId: "c1", Payload: &eventv1.Envelope_MessagePosted{MessagePosted: m}}
		mut(e, m)
		return e
	}
	cases := []struct {
		field string
		env   *eventv1.Envelope
	}{
		{"events[1].conversation_id", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) { e.ConversationId = "" })},
		{"events[1].conversation_id", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) { e.ConversationId = "a.b>" })},
		{"events[1].conversation_id", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) { e.ConversationId = strings.Repeat("x", 129) })},
		{"events[1].event_id", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) { e.EventId = "not-a-uuid" })},
		{"events[1].client_event_id", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) { e.ClientEventId = strings.Repeat("x", 129) })},
		{"events[1].tenant_id", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) { e.TenantId = "globex" })},
		{"events[1].occurred_at", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) {
			e.OccurredAt = timestamppb.New(now.Add(time.Hour))
		})},
		{"events[1].occurred_at", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) {
			e.OccurredAt = timestamppb.New(time.Date(1999, 1, 1, 0, 0, 0, 0, time.UTC))
		})},
		{"events[1].occurred_at", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) {
			e.OccurredAt = &timestamppb.Timestamp{Seconds: 1, Nanos: -5}
		})},
		{"events[1].payload", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) { e.Payload = nil })},
		{"events[1].payload", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) {
			e.Payload = &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{}}
		})},
		{"events[1].payload", msg(func(e *eventv1.Envelope, _ *eventv1.MessagePosted) {
			e.Payload = &eventv1.Envelope_TagApplied{TagApplied: &eventv1.TagApplied{Tag: "x"}}
		})},
		{"events[1].message_posted.role", msg(func(_ *eventv1.Envelope, m *eventv1.MessagePosted) { m.Role = eventv1.Role_ROLE_UNSPECIFIED })},
		{"events[1].message_posted.role", msg(func(_ *eventv1.Envelope, m *eventv1.MessagePosted) { m.Role = 99 })},
		{"events[1].message_posted.text", msg(func(_ *eventv1.Envelope, m *eventv1.MessagePosted) { m.Text = strings.Repeat("x", 101) })},
	}
	for _, c := range cases {
		good := visitor("c1", "fine")
		_, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{good, c.env}})
		assertField(t, err, c.field)
	}
	_, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{})
	assertField(t, err, "events")
	// A request beyond the byte limit (64 KiB here) is refused by gRPC.
	var big []*eventv1.Envelope
	for range 10 {
		big = append(big, visitor("c1", strings.Repeat("x", 100)))
	}
	big[0].ClientEventId = strings.Repeat("y", 70<<10)
	_, err = f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: big})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized request: want ResourceExhausted, got %v", err)
	}
	if got := f.streamMsgs(t); got != 0 {
		t.Fatalf("rejected requests stored %d events", got)
	}
}

func TestTenantIsolation(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	if err := f.store.CreateTenant(ctx, "globex", ""); err != nil {
		t.Fatal(err)
	}
	globexKey, _, err := f.store.CreateAPIKey(ctx, "globex", "test", []string{grpcx.ScopeIngest})
	if err != nil {
		t.Fatal(err)
	}
	globex := metadata.AppendToOutgoingContext(ctx, "x-api-key", globexKey)
	// The same conversation id and client id under two tenants are two events.
	for _, c := range []context.Context{f.ctx(), globex} {
		if _, err := f.client.PostMessage(c, &ingestv1.PostMessageRequest{ConversationId: "shared", ClientEventId: "m1", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hi"}}); err != nil {
			t.Fatal(err)
		}
	}
	// Globex's key cannot write into acme.
	e := visitor("shared", "intrusion")
	e.TenantId = "acme"
	_, err = f.client.Append(globex, &ingestv1.AppendRequest{Events: []*eventv1.Envelope{e}})
	assertField(t, err, "events[0].tenant_id")
	// A key without the ingest scope cannot write at all.
	readKey, _, err := f.store.CreateAPIKey(ctx, "acme", "reader", []string{grpcx.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.client.PostMessage(metadata.AppendToOutgoingContext(ctx, "x-api-key", readKey), &ingestv1.PostMessageRequest{ConversationId: "c", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hi"}})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("read-only key: want PermissionDenied, got %v", err)
	}
	_, err = f.client.PostMessage(metadata.AppendToOutgoingContext(ctx, "x-api-key", "pk_bogus"), &ingestv1.PostMessageRequest{ConversationId: "c", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hi"}})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("bogus key: want Unauthenticated, got %v", err)
	}
	envs := f.stored(t)
	if len(envs) != 2 || envs[0].TenantId != "acme" || envs[1].TenantId != "globex" || envs[0].EventId == envs[1].EventId {
		t.Fatalf("stored %v", envs)
	}
}

func TestEndedConversationIsRefused(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	nc, err := nats.Connect(f.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bus, err := eventbus.New(nc, eventbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := convview.Ensure(ctx, bus, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	endedAt := time.Date(2026, 11, 20, 9, 30, 0, 0, time.UTC)
	if err := convview.NewWriter(kv).MarkEnded(ctx, "acme", "done", endedAt, eventv1.EndReason_END_REASON_VISITOR_CLOSED); err != nil {
		t.Fatal(err)
	}
	// Lifecycle keeps the view current within a second; ingest sees it as fast.
	// Until the watch delivers the entry a post is still accepted (and
	// stored once, under its client id).
	deadline := time.Now().Add(time.Second)
	var last error
	accepted := uint64(0)
	for time.Now().Before(deadline) {
		_, last = f.client.PostMessage(f.ctx(), &ingestv1.PostMessageRequest{ConversationId: "done", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "anyone?"}, ClientEventId: "late"})
		if status.Code(last) == codes.FailedPrecondition {
			break
		}
		if last == nil {
			accepted = 1
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := status.Convert(last)
	if st.Code() != codes.FailedPrecondition || !strings.Contains(st.Message(), "ended at 2026-11-20T09:30:00Z") || !strings.Contains(st.Message(), "visitor_closed") {
		t.Fatalf("want FailedPrecondition saying when it ended, got %v", last)
	}
	var pf *errdetails.PreconditionFailure
	for _, d := range st.Details() {
		if v, ok := d.(*errdetails.PreconditionFailure); ok {
			pf = v
		}
	}
	if pf == nil || pf.Violations[0].Type != "CONVERSATION_ENDED" || pf.Violations[0].Subject != "events[0].conversation_id" {
		t.Fatalf("precondition details: %v", st.Details())
	}
	// A batch touching the ended conversation stores nothing; others are fine.
	_, err = f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{visitor("open", "a"), visitor("done", "b")}})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("mixed batch: %v", err)
	}
	if _, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{visitor("open", "a")}}); err != nil {
		t.Fatal(err)
	}
	if got := f.streamMsgs(t); got != 1+accepted {
		t.Fatalf("stream holds %d, want %d", got, 1+accepted)
	}
}

func TestTenantRateLimit(t *testing.T) {
	f := start(t, func(c *ingest.Config) { c.TenantRateOverrides = "acme=1:5" })
	five := make([]*eventv1.Envelope, 5)
	for i := range five {
		five[i] = visitor("c1", "x")
	}
	if _, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: five}); err != nil {
		t.Fatal(err)
	}
	_, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: five[:2]})
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("over the limit: want ResourceExhausted, got %v", err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if v, ok := d.(*errdetails.RetryInfo); ok {
			retry = v
		}
	}
	if retry == nil || retry.RetryDelay.AsDuration() <= 0 {
		t.Fatalf("want RetryInfo, got %v", st.Details())
	}
	if got := f.streamMsgs(t); got != 5 {
		t.Fatalf("stream holds %d, want 5", got)
	}
}

func httpDo(t *testing.T, method, url, key string, body []byte, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestHTTPJSON(t *testing.T) {
	f := start(t, func(c *ingest.Config) { c.CORSOrigins = []string{"https://shop.example"} })
	// Server-to-server: a message to a new conversation.
	resp, body := httpDo(t, "POST", f.httpURL+"/v1/conversations/web-1/messages", f.key, []byte(`{"message":{"role":"ROLE_VISITOR","text":"Hello from HTTP"},"client_event_id":"h1"}`), nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"event_id"`) {
		t.Fatalf("post message: %d %s", resp.StatusCode, body)
	}
	// No key.
	resp, _ = httpDo(t, "POST", f.httpURL+"/v1/conversations/web-1/messages", "", []byte(`{"message":{"role":"ROLE_VISITOR","text":"x"}}`), nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no key: %d", resp.StatusCode)
	}
	// Invalid input names the field.
	resp, body = httpDo(t, "POST", f.httpURL+"/v1/events:append", f.key, []byte(`{"events":[{"conversation_id":"c","message_posted":{"text":"no role"}}]}`), nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "events[0].message_posted.role") {
		t.Fatalf("invalid: %d %s", resp.StatusCode, body)
	}
	// CORS preflight from the widget's origin.
	resp, _ = httpDo(t, "OPTIONS", f.httpURL+"/v1/conversations/web-2:start", "", nil, map[string]string{
		"Origin": "https://shop.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type",
	})
	if resp.Header.Get("Access-Control-Allow-Origin") != "https://shop.example" {
		t.Fatalf("preflight: %d %v", resp.StatusCode, resp.Header)
	}
	resp, _ = httpDo(t, "OPTIONS", f.httpURL+"/v1/conversations/web-2:start", "", nil, map[string]string{
		"Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
	})
	if resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("preflight from an unknown origin allowed")
	}
	// The widget starts a conversation from the visitor's browser: ingest
	// fills in display name, platform and device from what it saw. A forged
	// visitor-metadata header is ignored.
	iphone := "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
	resp, body = httpDo(t, "POST", f.httpURL+"/v1/conversations/web-2:start", f.key,
		[]byte(`{"conversation":{"bot_id":"shop-bot","channel":"CHANNEL_WEB_WIDGET","visitor":{"token":"cookie-123"}}}`),
		map[string]string{"Origin": "https://shop.example", "User-Agent": iphone, "Grpc-Metadata-Parley-Client-Ip": "81.2.69.142"})
	if resp.StatusCode != 200 {
		t.Fatalf("start: %d %s", resp.StatusCode, body)
	}
	envs := f.stored(t)
	if len(envs) != 2 {
		t.Fatalf("stored %d events", len(envs))
	}
	if envs[0].ClientEventId != "h1" || envs[0].GetMessagePosted().GetText() != "Hello from HTTP" {
		t.Fatalf("first event %v", envs[0])
	}
	cs := envs[1].GetConversationStarted()
	v := cs.GetVisitor()
	if v.GetDisplayName() == "" || v.GetUserAgent() != iphone || v.GetIp() != "127.0.0.0" || cs.Platform != eventv1.Platform_PLATFORM_MOBILE_WEB || cs.DeviceType != "mobile" {
		t.Fatalf("enrichment: %v", cs)
	}
	// The same token always gets the same name, also over gRPC.
	res, err := f.client.StartConversation(f.ctx(), &ingestv1.StartConversationRequest{ConversationId: "grpc-3", Conversation: &eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Token: "cookie-123"}}})
	if err != nil {
		t.Fatal(err)
	}
	envs = f.stored(t)
	last := envs[len(envs)-1].GetConversationStarted()
	if envs[len(envs)-1].EventId != res.EventId || last.GetVisitor().GetDisplayName() != v.GetDisplayName() || last.GetVisitor().GetIp() != "" || last.DeviceType != "" {
		t.Fatalf("gRPC start without a browser: %v", last)
	}
}

func TestRasaAdapterWithRecordedConversation(t *testing.T) {
	f := start(t, func(c *ingest.Config) { c.MaxBatch = 100 })
	raw, err := os.ReadFile("internal/rasa/testdata/moodbot_tracker.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	type rasaResp struct {
		Results []struct {
			EventID   string `json:"event_id"`
			Duplicate bool   `json:"duplicate"`
		} `json:"results"`
		Skipped []struct {
			Index  int    `json:"index"`
			Event  string `json:"event"`
			Reason string `json:"reason"`
		} `json:"skipped"`
	}
	// A Rasa event broker sends one event per request.
	stored, skipped := 0, 0
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		resp, body := httpDo(t, "POST", f.httpURL+"/v1/rasa/events?bot_id=moodbot&channel=web_widget", f.key, sc.Bytes(), nil)
		if resp.StatusCode != 200 {
			t.Fatalf("rasa event %s: %d %s", sc.Bytes(), resp.StatusCode, body)
		}
		var r rasaResp
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		stored += len(r.Results)
		skipped += len(r.Skipped)
	}
	if stored == 0 || skipped == 0 {
		t.Fatalf("stored %d, skipped %d", stored, skipped)
	}
	envs := f.stored(t)
	if len(envs) != stored {
		t.Fatalf("stream holds %d, responses said %d", len(envs), stored)
	}
	var started *eventv1.ConversationStarted
	var visitorMsgs, botMsgs, unidentified int
	for _, e := range envs {
		if e.ConversationId != "visitor-8f2c41" || e.TenantId != "acme" {
			t.Fatalf("event %v in the wrong conversation", e)
		}
		if s := e.GetConversationStarted(); s != nil {
			started = s
		}
		if m := e.GetMessagePosted(); m != nil {
			switch m.Role {
			case eventv1.Role_ROLE_VISITOR:
				visitorMsgs++
			case eventv1.Role_ROLE_BOT:
				botMsgs++
			}
			if m.Unidentified {
				unidentified++
			}
		}
	}
	if started == nil || started.BotId != "moodbot" || started.Channel != eventv1.Channel_CHANNEL_WEB_WIDGET {
		t.Fatalf("conversation_started: %v", started)
	}
	if visitorMsgs == 0 || botMsgs == 0 || unidentified == 0 {
		t.Fatalf("visitor %d, bot %d, unidentified %d", visitorMsgs, botMsgs, unidentified)
	}
	// The broker redelivers the whole export as NDJSON: all duplicates.
	resp, body := httpDo(t, "POST", f.httpURL+"/v1/rasa/events?bot_id=moodbot&channel=web_widget", f.key, raw, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("redelivery: %d %s", resp.StatusCode, body)
	}
	var r rasaResp
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	for _, res := range r.Results {
		if !res.Duplicate {
			t.Fatalf("redelivered event %s stored again", res.EventID)
		}
	}
	if got := f.streamMsgs(t); got != uint64(stored) {
		t.Fatalf("after redelivery the stream holds %d, want %d", got, stored)
	}
	// Malformed input names the event and field; bad keys are refused.
	resp, body = httpDo(t, "POST", f.httpURL+"/v1/rasa/events", f.key, []byte(`{"event":"user","timestamp":1767612350.0,"text":"hi"}`), nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "events[0].sender_id") {
		t.Fatalf("malformed: %d %s", resp.StatusCode, body)
	}
	resp, _ = httpDo(t, "POST", f.httpURL+"/v1/rasa/events", "pk_wrong", raw[:bytes.IndexByte(raw, '\n')], nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad key: %d", resp.StatusCode)
	}
}

// A request whose close ended the conversation, resent because its answer
// was lost, is answered like any resend (duplicates), not refused; a new
// event for the conversation still is.
func TestResentClosingRequestIsADuplicate(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	closing := func() []*eventv1.Envelope {
		bye := visitor("bye", "thanks, bye")
		bye.ClientEventId = "m1"
		closed := &eventv1.Envelope{ConversationId: "bye", ClientEventId: "close-1",
			Payload: &eventv1.Envelope_ConversationClosed{ConversationClosed: &eventv1.ConversationClosed{ClosedBy: eventv1.Actor_ACTOR_VISITOR}}}
		return []*eventv1.Envelope{bye, closed}
	}
	first, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: closing()})
	if err != nil {
		t.Fatal(err)
	}
	// Lifecycle ends the conversation (here: the view written directly).
	nc, err := nats.Connect(f.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	bus, err := eventbus.New(nc, eventbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	kv, err := convview.Ensure(ctx, bus, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := convview.NewWriter(kv).MarkEnded(ctx, "acme", "bye", time.Now(), eventv1.EndReason_END_REASON_VISITOR_CLOSED); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := f.client.PostMessage(f.ctx(), &ingestv1.PostMessageRequest{ConversationId: "bye", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "one more"}, ClientEventId: "m2"})
		if status.Code(err) == codes.FailedPrecondition {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("a new event for the ended conversation: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stored := f.streamMsgs(t)
	again, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: closing()})
	if err != nil {
		t.Fatalf("resent closing request: %v", err)
	}
	for i, r := range again.Results {
		if !r.Duplicate || r.EventId != first.Results[i].EventId || r.StreamSequence != first.Results[i].StreamSequence {
			t.Fatalf("resend result %d = %v, want the duplicate of %v", i, r, first.Results[i])
		}
	}
	if got := f.streamMsgs(t); got != stored {
		t.Fatalf("the resend stored %d more events", got-stored)
	}
	// A request with another close (a new id) is refused.
	other := closing()
	other[1].ClientEventId = "close-2"
	if _, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: other}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a different close for the ended conversation: %v", err)
	}
}
