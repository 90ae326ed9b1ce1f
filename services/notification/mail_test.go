package notification_test

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/http/httptest"
	netmail "net/mail"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/localinfra/mailcatcher"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	"github.com/parley-dev/parley/services/notification"
	"github.com/parley-dev/parley/services/notification/internal/mail"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// smtpAt points the service's real SMTP sender at addr (no TLS).
func smtpAt(addr string) func(*notification.Config) {
	return func(c *notification.Config) {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		c.Email, c.SMTP = true, mail.Config{Host: host, Port: p, TLS: mail.TLSNone, From: "Parley <noreply@parley.example>", Timeout: 3 * time.Second}
	}
}

func catcher(t *testing.T, addr string) *mailcatcher.Catcher {
	t.Helper()
	c, err := mailcatcher.Start(mailcatcher.Options{Dir: filepath.Join(t.TempDir(), "mail"), Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// caught returns the raw mails received for rcpt.
func caught(t *testing.T, c *mailcatcher.Catcher, rcpt string) [][]byte {
	t.Helper()
	metas, err := c.Store().List()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, m := range metas {
		if len(m.Envelope.To) == 1 && m.Envelope.To[0] == rcpt {
			full, err := c.Store().Load(m.ID)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, full.Raw)
		}
	}
	return out
}

// parsed is a received mail taken apart with net/mail and mime/multipart.
type parsed struct {
	header     netmail.Header
	text, html string
}

func parseMail(t *testing.T, raw []byte) parsed {
	t.Helper()
	msg, err := netmail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	p := parsed{header: msg.Header}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("content type %q: %v", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = part
		if strings.EqualFold(part.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
			r = quotedprintable.NewReader(part) // NextPart leaves it when it did not decode
		}
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		switch ct {
		case "text/plain":
			p.text = strings.ReplaceAll(string(b), "\r\n", "\n")
		case "text/html":
			p.html = string(b)
		}
	}
	if p.text == "" || p.html == "" {
		t.Fatalf("want text and HTML parts: %q", raw)
	}
	return p
}

// transcriptLines are the non-empty lines between the zone line and the
// signature of a transcript's text part.
func transcriptLines(t *testing.T, text string) (zone string, out []string) {
	t.Helper()
	in := false
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(l, "Times are in "):
			zone, in = l, true
		case l == "-- ":
			in = false
		case in && strings.TrimSpace(l) != "":
			out = append(out, l)
		}
	}
	return zone, out
}

// endedAroundMidnight is a conversation in New York that crosses midnight
// local time: visitor, bot, an agent who joins by name (two lines), a
// system message, the end.
func endedAroundMidnight(id string) ([]*eventv1.Envelope, []time.Time) {
	cv := evtest.New("acme", id)
	start := time.Date(2026, 11, 21, 4, 57, 30, 0, time.UTC) // 23:57:30 EST on the 20th
	started := cv.Event(&eventv1.ConversationStarted{BotId: "support", Channel: eventv1.Channel_CHANNEL_WHATSAPP,
		Visitor: &eventv1.Visitor{Token: "v1", DisplayName: "Maria Lopez"}})
	envs := []*eventv1.Envelope{started,
		cv.Visitor("where is my order?"),
		cv.Bot("Let me check.", 400),
		cv.Event(&eventv1.AgentJoined{AgentId: "a1", AgentName: "Dana"}),
		cv.Event(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_SYSTEM, Text: "Dana joined"}),
		cv.Agent("Found it.\nIt ships today.", 9000),
		cv.Ended(eventv1.EndReason_END_REASON_VISITOR_CLOSED)}
	times := make([]time.Time, len(envs))
	for i, e := range envs {
		times[i] = start.Add(time.Duration(i) * 70 * time.Second)
		e.OccurredAt, e.RecordedAt = timestamppb.New(times[i]), timestamppb.New(times[i])
	}
	return envs, times
}

// TestConversationEndSendsSignedWebhookAndTranscriptEmail: a conversation
// that ends produces a signed webhook and, for an email subscription with
// transcript set, a branded transcript mail through a real SMTP server,
// every message with its author and local time (the tenant's zone).
func TestConversationEndSendsSignedWebhookAndTranscriptEmail(t *testing.T) {
	smtpSrv := catcher(t, "127.0.0.1:0")
	f := start(t, smtpAt(smtpSrv.Addr()))
	setTimeZone(t, f, "acme", "America/New_York")
	if _, err := f.client.SetBranding(f.ctx(), &notificationv1.SetBrandingRequest{Branding: &notificationv1.Branding{
		Name: "Acme Support", PrimaryColor: "#aa0000", ReplyTo: "help@acme.example"}}); err != nil {
		t.Fatal(err)
	}
	rcv := newReceiver(t, 0)
	hook := f.subscribe(rcv.srv.URL+"/hook", []string{"conversation_ended"}, "")
	rcv.setSecret(hook.Secret)
	if _, err := f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{
		Kind: "email", Emails: []string{"team@acme.example"}, EventKinds: []string{"conversation_ended"}, Transcript: true}}); err != nil {
		t.Fatal(err)
	}
	envs, at := endedAroundMidnight("mid1")
	f.publish(envs...)

	f.waitFor("the webhook and the mail", func() bool {
		_, s, _, _ := rcv.snapshot()
		return len(s) == 1 && len(caught(t, smtpSrv, "team@acme.example")) == 1
	})
	if _, _, _, bad := rcv.snapshot(); len(bad) != 0 {
		t.Fatalf("bad signatures %v", bad)
	}
	m := parseMail(t, caught(t, smtpSrv, "team@acme.example")[0])
	if from, _ := netmail.ParseAddress(m.header.Get("From")); from == nil || from.Name != "Acme Support" {
		t.Fatalf("From %q", m.header.Get("From"))
	}
	if m.header.Get("Reply-To") != "<help@acme.example>" && m.header.Get("Reply-To") != "help@acme.example" {
		t.Fatalf("Reply-To %q", m.header.Get("Reply-To"))
	}
	if !strings.Contains(m.html, "#aa0000") || !strings.Contains(m.html, "Maria Lopez") {
		t.Fatalf("HTML without the branding or the visitor: %s", m.html)
	}
	ny, _ := time.LoadLocation("America/New_York")
	hm := func(i int) string { return at[i].In(ny).Format("15:04") }
	day := func(i int) string { return "-- " + at[i].In(ny).Format("Monday, 2 January 2006") + " --" }
	zone, got := transcriptLines(t, m.text)
	if zone != "Times are in America/New_York (EST)." {
		t.Fatalf("zone line %q", zone)
	}
	// Independently: 23:58 and 23:59 on Friday the 20th, then the agent's
	// two lines at 00:03 on Saturday the 21st; no system message.
	want := []string{day(1), "[" + hm(1) + "] Maria Lopez:", "  where is my order?", "[" + hm(2) + "] Assistant:", "  Let me check.",
		day(5), "[" + hm(5) + "] Dana:", "  Found it.", "  It ships today."}
	if hm(1) != "23:58" || hm(5) != "00:03" || day(5) != "-- Saturday, 21 November 2026 --" {
		t.Fatalf("test's own times are off: %s %s %s", hm(1), hm(5), day(5))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("transcript lines\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	_, err := f.client.SendTranscript(f.ctx(), &notificationv1.SendTranscriptRequest{ConversationId: "mid1", Email: "maria@example.com", Audience: 7})
	assertInvalid(t, err, "audience")
	// SendTranscript to the visitor: "You", same times.
	if _, err := f.client.SendTranscript(f.ctx(), &notificationv1.SendTranscriptRequest{ConversationId: "mid1", Email: "maria@example.com"}); err != nil {
		t.Fatal(err)
	}
	f.waitFor("the visitor's copy", func() bool { return len(caught(t, smtpSrv, "maria@example.com")) == 1 })
	v := parseMail(t, caught(t, smtpSrv, "maria@example.com")[0])
	_, got = transcriptLines(t, v.text)
	want[1] = "[" + hm(1) + "] You:"
	if strings.Join(got, "\n") != strings.Join(want, "\n") || v.header.Get("Subject") != "Your conversation with Acme Support" {
		t.Fatalf("visitor's copy %q:\n%s", v.header.Get("Subject"), strings.Join(got, "\n"))
	}
}

func deliveriesOf(t *testing.T, f *fixture, sub string) []*notificationv1.Delivery {
	t.Helper()
	ds, err := f.client.ListDeliveries(f.ctx(), &notificationv1.ListDeliveriesRequest{SubscriptionId: sub})
	if err != nil {
		t.Fatal(err)
	}
	return ds.Deliveries
}

func emailSubscription(t *testing.T, f *fixture, to string) *notificationv1.Subscription {
	t.Helper()
	sub, err := f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{
		Kind: "email", Emails: []string{to}, EventKinds: []string{"conversation_ended"}}})
	if err != nil {
		t.Fatal(err)
	}
	return sub
}

// TestSMTPDownIsRetriedAndDeliveredOnce: with the SMTP server down the
// email delivery fails and is retried; once the server is up it arrives,
// exactly once, as an HTML and text event mail.
func TestSMTPDownIsRetriedAndDeliveredOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	f := start(t, smtpAt(addr))
	sub := emailSubscription(t, f, "ops@acme.example")
	f.publish(conversationThatEnds("down1")...)
	f.waitFor("failed attempts", func() bool {
		a, err := f.client.ListAttempts(f.ctx(), &notificationv1.ListAttemptsRequest{SubscriptionId: sub.SubscriptionId})
		return err == nil && len(a.Attempts) >= 2
	})
	// Pending, and the log tells the tenant nothing of the operator's hosts.
	if d := deliveriesOf(t, f, sub.SubscriptionId); len(d) != 1 || d[0].State != "pending" ||
		d[0].LastError == "" || strings.Contains(d[0].LastError, "127.0.0.1") || strings.Contains(d[0].LastError, "dial") {
		t.Fatalf("while down: %v", d)
	}
	c := catcher(t, addr)
	f.waitFor("delivered", func() bool {
		d := deliveriesOf(t, f, sub.SubscriptionId)
		return len(d) == 1 && d[0].State == "delivered"
	})
	time.Sleep(500 * time.Millisecond) // retries would have come by now
	got := caught(t, c, "ops@acme.example")
	if len(got) != 1 {
		t.Fatalf("%d mails", len(got))
	}
	m := parseMail(t, got[0])
	if !strings.Contains(m.text, `"conversation_ended"`) || !strings.Contains(m.text, "conversation down1") ||
		!strings.Contains(m.html, "conversation_ended") {
		t.Fatalf("event mail:\n%s", m.text)
	}
}

// refusing550 answers RCPT TO gone@… with 550 and counts the attempts.
type refusing550 struct{ rcpts chan string }

func (s refusing550) Mail(string, *smtp.MailOptions) error { return nil }
func (s refusing550) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts <- to
	if strings.HasPrefix(to, "gone@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	return nil
}
func (s refusing550) Data(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
func (s refusing550) Reset()                 {}
func (s refusing550) Logout() error          { return nil }

// TestRefusedRecipientFailsTheDelivery: a 550 for the recipient fails the
// delivery at once with the reason; it is not retried and the
// subscription stays active.
func TestRefusedRecipientFailsTheDelivery(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcpts := make(chan string, 100)
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return refusing550{rcpts}, nil }))
	srv.Domain = "refusing.test"
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	f := start(t, smtpAt(ln.Addr().String()))
	sub := emailSubscription(t, f, "gone@acme.example")
	f.publish(conversationThatEnds("gone1")...)
	f.waitFor("failed", func() bool {
		d := deliveriesOf(t, f, sub.SubscriptionId)
		return len(d) == 1 && d[0].State == "failed"
	})
	time.Sleep(700 * time.Millisecond) // several retry periods
	d := deliveriesOf(t, f, sub.SubscriptionId)
	if d[0].Attempts != 1 || !strings.Contains(d[0].LastError, "550") {
		t.Fatalf("delivery %v", d[0])
	}
	if len(rcpts) != 1 {
		t.Fatalf("the server saw %d RCPT TO", len(rcpts))
	}
	if s := f.subscription(sub.SubscriptionId); s.State != "active" {
		t.Fatalf("subscription %s", s.State)
	}
}

// TestBrandingAPI: admins set it (validated, the field named), readers and
// HTTP/JSON read it.
func TestBrandingAPI(t *testing.T) {
	f := start(t)
	_, err := f.client.SetBranding(f.ctx(), &notificationv1.SetBrandingRequest{Branding: &notificationv1.Branding{PrimaryColor: "red"}})
	assertInvalid(t, err, "branding.primary_color")
	_, err = f.client.SetBranding(f.ctx(), &notificationv1.SetBrandingRequest{Branding: &notificationv1.Branding{LogoUrl: "http://x.example/l.png"}})
	assertInvalid(t, err, "branding.logo_url")
	got, err := f.client.GetBranding(f.ctx(), &notificationv1.GetBrandingRequest{})
	if err != nil || got.Name != "" || got.UpdatedAt != nil {
		t.Fatalf("unset branding %v, %v", got, err)
	}
	req, _ := http.NewRequest("PUT", "http://"+f.cfg.HTTPAddr+"/v1/branding",
		strings.NewReader(`{"name":"Acme","accent_color":"#eee","logo_url":"https://acme.example/logo.png","reply_to":"help@acme.example"}`))
	req.Header.Set("Authorization", "Bearer "+f.keys["acme"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if resp.StatusCode != 200 || m["name"] != "Acme" {
		t.Fatalf("PUT: %d %v", resp.StatusCode, m)
	}
	got, err = f.client.GetBranding(f.ctx(), &notificationv1.GetBrandingRequest{})
	if err != nil || got.Name != "Acme" || got.AccentColor != "#eee" || got.LogoUrl != "https://acme.example/logo.png" ||
		got.ReplyTo != "help@acme.example" || got.UpdatedAt == nil {
		t.Fatalf("branding %v, %v", got, err)
	}
}

// TestDisabledEndpointNoticeIsABrandedMail: the owner of an endpoint
// disabled by 410 Gone gets an HTML and text mail through SMTP with the
// tenant's branding.
func TestDisabledEndpointNoticeIsABrandedMail(t *testing.T) {
	smtpSrv := catcher(t, "127.0.0.1:0")
	f := start(t, smtpAt(smtpSrv.Addr()), func(c *notification.Config) { c.EndpointConcurrency = 1 })
	if _, err := f.client.SetBranding(f.ctx(), &notificationv1.SetBrandingRequest{Branding: &notificationv1.Branding{Name: "Acme Ops"}}); err != nil {
		t.Fatal(err)
	}
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) }))
	t.Cleanup(gone.Close)
	if _, err := f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{
		Target: gone.URL, OwnerEmail: "owner@acme.example", EventKinds: []string{"message_posted"}}}); err != nil {
		t.Fatal(err)
	}
	cv := evtest.New("acme", "g1")
	f.publish(cv.Started("support"), cv.Visitor("one"))
	f.waitFor("the owner's mail", func() bool { return len(caught(t, smtpSrv, "owner@acme.example")) == 1 })
	m := parseMail(t, caught(t, smtpSrv, "owner@acme.example")[0])
	from, _ := netmail.ParseAddress(m.header.Get("From"))
	if from == nil || from.Name != "Acme Ops" || !strings.Contains(m.text, "410 Gone") || !strings.Contains(m.html, "410 Gone") ||
		!strings.Contains(m.text, gone.URL) {
		t.Fatalf("notice from %q:\n%s", m.header.Get("From"), m.text)
	}
}

// TestTranscriptIsBoundedAndTenantScoped: a transcript holds only its
// tenant's conversation (another tenant's conversation of the same id
// stays out), at most MaxTranscriptMessages messages, the first ones; a
// conversation without events fails its delivery at once.
func TestTranscriptIsBoundedAndTenantScoped(t *testing.T) {
	smtpSrv := catcher(t, "127.0.0.1:0")
	f := start(t, smtpAt(smtpSrv.Addr()), func(c *notification.Config) { c.MaxTranscriptMessages = 3 })
	other := evtest.New("globex", "shared")
	f.publish(other.Started("support"), other.Visitor("globex secret"))
	cv := evtest.New("acme", "shared")
	f.publish(cv.Started("support"), cv.Visitor("one"), cv.Bot("two", 1), cv.Visitor("three"), cv.Bot("four", 1))
	if _, err := f.client.SendTranscript(f.ctx(), &notificationv1.SendTranscriptRequest{ConversationId: "shared", Email: "a@acme.example",
		Audience: notificationv1.TranscriptAudience_TRANSCRIPT_AUDIENCE_AGENT}); err != nil {
		t.Fatal(err)
	}
	f.waitFor("the transcript", func() bool { return len(caught(t, smtpSrv, "a@acme.example")) == 1 })
	m := parseMail(t, caught(t, smtpSrv, "a@acme.example")[0])
	_, got := transcriptLines(t, m.text)
	want := []string{"-- Friday, 20 November 2026 --", "[09:00] Visitor:", "  one", "[09:00] Assistant:", "  two", "[09:00] Visitor:", "  three"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") || strings.Contains(m.text, "globex") {
		t.Fatalf("transcript:\n%s", m.text)
	}

	d, err := f.client.SendTranscript(f.ctx(), &notificationv1.SendTranscriptRequest{ConversationId: "never", Email: "a@acme.example"})
	if err != nil {
		t.Fatal(err)
	}
	f.waitFor("failed", func() bool {
		ds := deliveriesOf(t, f, d.SubscriptionId)
		for _, x := range ds {
			if x.DeliveryId == d.DeliveryId {
				return x.State == "failed" && x.Attempts == 1 && strings.Contains(x.LastError, "no events")
			}
		}
		return false
	})
}
