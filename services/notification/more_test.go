package notification_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/evtest"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	"github.com/parley-dev/parley/services/notification"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fakeMailer records mails: what the dispatcher asks of the Mailer
// (mail_test.go sends through a real SMTP server).
type fakeMailer struct {
	mu   sync.Mutex
	sent []notification.MailMessage
}

func (m *fakeMailer) Send(_ context.Context, msg notification.MailMessage) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sent = append(m.sent, msg)
	return nil
}

func (m *fakeMailer) all() []notification.MailMessage {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]notification.MailMessage(nil), m.sent...)
}

func (f *fixture) subscription(id string) *notificationv1.Subscription {
	f.t.Helper()
	s, err := f.client.GetSubscription(f.ctx(), &notificationv1.GetSubscriptionRequest{SubscriptionId: id})
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func TestGoneDisablesAtOnceAndTellsTheOwner(t *testing.T) {
	mailer := &fakeMailer{}
	// One call at a time, so that the first 410 is the only call.
	f := start(t, func(c *notification.Config) { c.Mailer, c.EndpointConcurrency = mailer, 1 })
	var hits atomic.Int32
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusGone)
	}))
	t.Cleanup(gone.Close)
	sub, err := f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{
		Target: gone.URL, OwnerEmail: "owner@example.com", EventKinds: []string{"message_posted"}}})
	if err != nil {
		t.Fatal(err)
	}
	cv := evtest.New("acme", "g1")
	f.publish(cv.Started("support"), cv.Visitor("one"), cv.Visitor("two"), cv.Visitor("three"))
	f.waitFor("disabled", func() bool { return f.subscription(sub.SubscriptionId).State == "disabled" })
	time.Sleep(300 * time.Millisecond)
	s := f.subscription(sub.SubscriptionId)
	if s.DisabledReason == "" || s.DisabledAt == nil || hits.Load() != 1 {
		t.Fatalf("subscription %v after %d calls (want 1: disabled at the first 410)", s, hits.Load())
	}
	f.waitFor("the owner's mail", func() bool { return len(mailer.all()) == 1 })
	if m := mailer.all()[0]; m.To[0] != "owner@example.com" || !bytes.Contains([]byte(m.Text), []byte("410")) {
		t.Fatalf("mail %+v", m)
	}
	// Resumed, it gets the deliveries that waited.
	if _, err := f.client.ResumeSubscription(f.ctx(), &notificationv1.ResumeSubscriptionRequest{SubscriptionId: sub.SubscriptionId}); err != nil {
		t.Fatal(err)
	}
	f.waitFor("the waiting deliveries", func() bool { return hits.Load() >= 2 })
}

func TestEndpointFailingLongerThanDisableAfterIsDisabled(t *testing.T) {
	f := start(t, func(c *notification.Config) { c.DisableAfter = 300 * time.Millisecond })
	rcv := newReceiver(t, 1_000_000)
	sub := f.subscribe(rcv.srv.URL, []string{"conversation_started"}, "")
	rcv.setSecret(sub.Secret)
	f.publish(evtest.New("acme", "d1").Started("support"))
	f.waitFor("disabled", func() bool { return f.subscription(sub.SubscriptionId).State == "disabled" })
	s := f.subscription(sub.SubscriptionId)
	if s.FailingSince == nil || s.DisabledAt.AsTime().Sub(s.FailingSince.AsTime()) < 300*time.Millisecond {
		t.Fatalf("subscription %v", s)
	}
	n, _, _, _ := rcv.snapshot()
	time.Sleep(400 * time.Millisecond)
	if m, _, _, _ := rcv.snapshot(); m != n {
		t.Fatalf("a disabled endpoint got %d more calls", m-n)
	}
}

// A slow endpoint fills only its own slots: another subscription's
// deliveries go out meanwhile.
func TestSlowEndpointDoesNotDelayOthers(t *testing.T) {
	f := start(t, func(c *notification.Config) { c.EndpointConcurrency, c.AttemptTimeout = 2, 5*time.Second })
	release := make(chan struct{})
	var slowCalls atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		slowCalls.Add(1)
		<-release
	}))
	t.Cleanup(func() { close(release); slow.Close() })
	f.subscribe(slow.URL, []string{"message_posted"}, "")
	fast := newReceiver(t, 0)
	fs := f.subscribe(fast.srv.URL, []string{"message_posted"}, "")
	fast.setSecret(fs.Secret)
	cv := evtest.New("acme", "s1")
	envs := []*eventv1.Envelope{cv.Started("support")}
	for range 20 {
		envs = append(envs, cv.Visitor("hello"))
	}
	f.publish(envs...)
	f.waitFor("the fast endpoint's 20 deliveries", func() bool { _, s, _, _ := fast.snapshot(); return len(s) == 20 })
	if n := slowCalls.Load(); n > 2 {
		t.Fatalf("the slow endpoint has %d calls in flight (limit 2)", n)
	}
}

func TestReplayEventsFromSequenceAndTime(t *testing.T) {
	f := start(t)
	marker := newReceiver(t, 0)
	ms := f.subscribe(marker.srv.URL, []string{"conversation_ended"}, "")
	marker.setSecret(ms.Secret)
	cv := evtest.New("acme", "r1")
	f.publish(cv.Started("support"), cv.Visitor("a"), cv.Visitor("b"), cv.Visitor("c"), cv.Ended(eventv1.EndReason_END_REASON_VISITOR_CLOSED))
	f.waitFor("the conversation consumed", func() bool { _, s, _, _ := marker.snapshot(); return len(s) == 1 })
	// Subscribed after the events: replay delivers them, conditions seeing
	// the conversation as it was at each event.
	rcv := newReceiver(t, 0)
	sub := f.subscribe(rcv.srv.URL, []string{"message_posted"}, "conversation.visitor_messages >= 2")
	rcv.setSecret(sub.Secret)
	time.Sleep(300 * time.Millisecond)
	if n, _, _, _ := rcv.snapshot(); n != 0 {
		t.Fatalf("%d calls before the replay", n)
	}
	res, err := f.client.ReplayEvents(f.ctx(), &notificationv1.ReplayEventsRequest{SubscriptionId: sub.SubscriptionId,
		From: &notificationv1.ReplayEventsRequest_FromSequence{FromSequence: 1}})
	if err != nil || res.Enqueued != 2 {
		t.Fatalf("replay %v, %v (want messages b and c)", res, err)
	}
	f.waitFor("two deliveries", func() bool { _, s, _, _ := rcv.snapshot(); return len(s) == 2 })
	// From a time after every event: nothing.
	res, err = f.client.ReplayEvents(f.ctx(), &notificationv1.ReplayEventsRequest{SubscriptionId: sub.SubscriptionId,
		From: &notificationv1.ReplayEventsRequest_FromTime{FromTime: timestamppb.New(time.Now().Add(time.Hour))}})
	if err != nil || res.Enqueued != 0 {
		t.Fatalf("replay from the future %v, %v", res, err)
	}
}

func TestRotatedSecretSignsAlongsideThePreviousOne(t *testing.T) {
	f := start(t)
	rcv := newReceiver(t, 0)
	sub := f.subscribe(rcv.srv.URL, nil, "")
	rcv.setSecret(sub.Secret) // the receiver still knows only the old secret
	rot, err := f.client.RotateSecret(f.ctx(), &notificationv1.RotateSecretRequest{SubscriptionId: sub.SubscriptionId})
	if err != nil || rot.Secret == sub.Secret {
		t.Fatalf("rotate %v, %v", rot, err)
	}
	if _, err := f.client.SendTestEvent(f.ctx(), &notificationv1.SendTestEventRequest{SubscriptionId: sub.SubscriptionId}); err != nil {
		t.Fatal(err)
	}
	f.waitFor("the test event (old secret)", func() bool { _, s, _, _ := rcv.snapshot(); return len(s) == 1 })
	rcv.setSecret(rot.Secret)
	if _, err := f.client.SendTestEvent(f.ctx(), &notificationv1.SendTestEventRequest{SubscriptionId: sub.SubscriptionId}); err != nil {
		t.Fatal(err)
	}
	f.waitFor("the test event (new secret)", func() bool { _, s, _, _ := rcv.snapshot(); return len(s) == 2 })
	if _, _, _, bad := rcv.snapshot(); len(bad) != 0 {
		t.Fatalf("bad signatures %v", bad)
	}
}

func TestPausedSubscriptionRecordsNothing(t *testing.T) {
	f := start(t)
	rcv := newReceiver(t, 0)
	sub := f.subscribe(rcv.srv.URL, []string{"conversation_started"}, "")
	rcv.setSecret(sub.Secret)
	if _, err := f.client.PauseSubscription(f.ctx(), &notificationv1.PauseSubscriptionRequest{SubscriptionId: sub.SubscriptionId}); err != nil {
		t.Fatal(err)
	}
	cv := evtest.New("acme", "p1")
	f.publish(cv.Started("support"))
	// A later event of the same conversation (same partition, stream
	// order) delivered elsewhere shows the first was consumed.
	marker := newReceiver(t, 0)
	ms := f.subscribe(marker.srv.URL, []string{"message_posted"}, "")
	marker.setSecret(ms.Secret)
	f.publish(cv.Visitor("hello"))
	f.waitFor("the marker", func() bool { _, s, _, _ := marker.snapshot(); return len(s) == 1 })
	if _, err := f.client.ResumeSubscription(f.ctx(), &notificationv1.ResumeSubscriptionRequest{SubscriptionId: sub.SubscriptionId}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if n, _, _, _ := rcv.snapshot(); n != 0 {
		t.Fatalf("the paused subscription got %d calls", n)
	}
}

func TestHTTPJSONSubscriptions(t *testing.T) {
	f := start(t)
	do := func(method, path, body string) (int, map[string]any) {
		req, _ := http.NewRequest(method, "http://"+f.cfg.HTTPAddr+path, bytes.NewBufferString(body))
		req.Header.Set("Authorization", "Bearer "+f.keys["acme"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		return resp.StatusCode, m
	}
	code, m := do("POST", "/v1/subscriptions", `{"target":"https://hooks.example.com/x","event_kinds":["conversation_ended"]}`)
	if code != 200 || m["subscription_id"] == nil || m["secret"] == nil {
		t.Fatalf("create: %d %v", code, m)
	}
	id := m["subscription_id"].(string)
	if code, m = do("POST", "/v1/subscriptions/"+id+":pause", ""); code != 200 || m["state"] != "paused" {
		t.Fatalf("pause: %d %v", code, m)
	}
	if code, m = do("GET", "/v1/subscriptions", ""); code != 200 || len(m["subscriptions"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, m)
	}
	if code, _ = do("POST", "/v1/subscriptions", `{"target":"https://x.example.com","condition":"1 +"}`); code != 400 {
		t.Fatalf("bad condition: %d", code)
	}
	if code, _ = do("DELETE", "/v1/subscriptions/"+id, ""); code != 200 {
		t.Fatalf("delete: %d", code)
	}
	if code, _ = do("GET", "/v1/subscriptions/"+id, ""); code != 404 {
		t.Fatalf("get deleted: %d", code)
	}
}

func TestEmailSubscriptionsAndTranscriptsGoThroughTheMailer(t *testing.T) {
	// Without a mailer, email is refused.
	f := start(t)
	_, err := f.client.SendTranscript(f.ctx(), &notificationv1.SendTranscriptRequest{ConversationId: "t1", Email: "v@example.com"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("without a mailer: %v", err)
	}
	mailer := &fakeMailer{}
	f = start(t, func(c *notification.Config) { c.Mailer = mailer })
	_, err = f.client.SendTranscript(f.ctx(), &notificationv1.SendTranscriptRequest{ConversationId: "t1", Email: "not an address"})
	assertInvalid(t, err, "email")
	_, err = f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{
		Kind: "email", Emails: []string{"a@example.com", "nope"}}})
	assertInvalid(t, err, "subscription.emails[1]")
	if _, err := f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{
		Kind: "email", Emails: []string{"team@example.com"}, EventKinds: []string{"conversation_ended"}, Transcript: true}}); err != nil {
		t.Fatal(err)
	}
	f.publish(conversationThatEnds("t1")...)
	d, err := f.client.SendTranscript(f.ctx(), &notificationv1.SendTranscriptRequest{ConversationId: "t1", Email: "visitor@example.com"})
	if err != nil || d.Kind != "email" {
		t.Fatalf("transcript %v, %v", d, err)
	}
	f.waitFor("two mails", func() bool { return len(mailer.all()) == 2 })
	var transcript, event bool
	for _, m := range mailer.all() {
		switch {
		case m.TranscriptOf == "t1" && m.To[0] == "visitor@example.com":
			transcript = true
		case m.To[0] == "team@example.com" && m.TranscriptOf == "t1" && bytes.Contains([]byte(m.Text), []byte(`"conversation_ended"`)):
			event = true
		}
	}
	if !transcript || !event {
		t.Fatalf("mails %+v", mailer.all())
	}
}

func TestSubscriptionsPerTenantAreCapped(t *testing.T) {
	f := start(t, func(c *notification.Config) { c.MaxSubscriptionsPerTenant = 2 })
	f.subscribe("http://example.com/1", nil, "")
	f.subscribe("http://example.com/2", nil, "")
	_, err := f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{Target: "http://example.com/3"}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third subscription: %v", err)
	}
}
