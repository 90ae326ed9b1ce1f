package mail_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	netmail "net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/localinfra/mailcatcher"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/services/notification/internal/mail"
)

// tlsCatcher starts the SMTP catcher with STARTTLS (a certificate for
// "localhost" from a test CA) and a required login, and returns it with a
// sender configuration that trusts the CA.
func tlsCatcher(t *testing.T) (*mailcatcher.Catcher, mail.Config) { return tlsCatcherMode(t, false) }

// tlsCatcherMode is tlsCatcher, speaking TLS from the first byte when
// implicit.
func tlsCatcherMode(t *testing.T, implicit bool) (*mailcatcher.Catcher, mail.Config) {
	t.Helper()
	dir := t.TempDir()
	ca, certFile, keyFile, _ := testenv.WritePKI(t, dir, "localhost")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	c, err := mailcatcher.Start(mailcatcher.Options{
		Dir: filepath.Join(dir, "mail"), TLS: &tls.Config{Certificates: []tls.Certificate{cert}},
		Users: map[string]string{"parley": "s3cret"}, ImplicitTLS: implicit,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_, port, _ := net.SplitHostPort(c.Addr())
	p, _ := strconv.Atoi(port)
	mode := mail.TLSStartTLS
	if implicit {
		mode = mail.TLSImplicit
	}
	return c, mail.Config{Host: "localhost", Port: p, Username: "parley", Password: "s3cret", TLS: mode,
		TLSCA: ca, From: "Parley <noreply@parley.example>", Timeout: 10 * time.Second}
}

// received is one message as the server stored it, parsed here with the
// standard library only.
type received struct {
	meta       mailcatcher.Meta
	header     netmail.Header
	text, html string
	parts      []string
}

func receivedMail(t *testing.T, c *mailcatcher.Catcher) []received {
	t.Helper()
	metas, err := c.Store().List()
	if err != nil {
		t.Fatal(err)
	}
	var out []received
	for _, m := range metas {
		raw, err := os.ReadFile(filepath.Join(c.Store().Dir, m.ID+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		msg, err := netmail.ReadMessage(strings.NewReader(string(raw)))
		if err != nil {
			t.Fatal(err)
		}
		r := received{meta: m, header: msg.Header}
		mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/alternative" {
			t.Fatalf("Content-Type %q (%v), want multipart/alternative", msg.Header.Get("Content-Type"), err)
		}
		mr := multipart.NewReader(msg.Body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			var body io.Reader = p
			switch p.Header.Get("Content-Transfer-Encoding") {
			case "quoted-printable":
				body = quotedprintable.NewReader(p)
			case "base64":
				body = base64.NewDecoder(base64.StdEncoding, p)
			}
			b, err := io.ReadAll(body)
			if err != nil {
				t.Fatal(err)
			}
			pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
			r.parts = append(r.parts, pt)
			switch pt {
			case "text/plain":
				r.text = strings.ReplaceAll(string(b), "\r\n", "\n")
			case "text/html":
				r.html = strings.ReplaceAll(string(b), "\r\n", "\n")
			}
		}
		out = append(out, r)
	}
	return out
}

const hostile = `<script>alert("x")</script><img src=x onerror=alert(1)> & "quoted"`

// TestSendTranscriptOverStartTLS renders a transcript with a hostile
// visitor message across a daylight-saving change and sends it through
// STARTTLS with a login; what the server received has both alternatives,
// the hostile text escaped in HTML, local times, and a Message-ID that a
// retried send repeats.
func TestSendTranscriptOverStartTLS(t *testing.T) {
	c, cfg := tlsCatcher(t)
	s, err := mail.NewSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// New York moves from EST (UTC-5) to EDT (UTC-4) at 07:00 UTC on
	// 8 March 2026.
	t1 := time.Date(2026, 3, 8, 6, 30, 0, 0, time.UTC)
	t2 := time.Date(2026, 3, 8, 7, 45, 0, 0, time.UTC)
	want1 := t1.Add(-5 * time.Hour).Format("15:04") // 01:30
	want2 := t2.Add(-4 * time.Hour).Format("15:04") // 03:45
	brand := mail.Branding{Name: `Acme <b>Shop</b>`, PrimaryColor: "#112233", LogoURL: "https://acme.example/logo.png",
		ReplyTo: "support@acme.example", Contact: `Call <us> at 555`}
	msg, err := mail.RenderTranscript(brand,
		mail.Conversation{TenantID: "acme", ID: "conv-1", Channel: "web_widget", VisitorName: "Gentle Otter", StartedAt: t1,
			Link: "https://parley.example/v1/shared/tok?a=1&b=2"},
		[]mail.TranscriptMessage{
			{At: t1, Role: mail.RoleVisitor, Text: hostile + "\nsecond line"},
			{At: t1.Add(time.Second), Role: mail.RoleSystem, Text: "system-only note"},
			{At: t2, Role: mail.RoleBot, Text: "Let me check."},
			{At: t2, Role: mail.RoleAgent, AgentName: "<i>Dana</i>", Text: "Hi, Dana here."},
		}, "America/New_York", mail.AudienceVisitor)
	if err != nil {
		t.Fatal(err)
	}
	msg.To, msg.Key = []string{"visitor@example.com"}, "sub-1/evt-1"
	ctx := context.Background()
	for range 2 { // the second is a retry of the same delivery
		if err := s.Send(ctx, msg); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	got := receivedMail(t, c)
	if len(got) != 2 {
		t.Fatalf("server received %d messages, want 2", len(got))
	}
	r := got[0]
	if !r.meta.Envelope.TLS || r.meta.Envelope.AuthUser != "parley" {
		t.Errorf("envelope %+v: want TLS and user parley", r.meta.Envelope)
	}
	if strings.Join(r.parts, ",") != "text/plain,text/html" {
		t.Errorf("parts %v, want text/plain then text/html", r.parts)
	}
	id1, id2 := got[0].header.Get("Message-Id"), got[1].header.Get("Message-Id")
	if id1 == "" || id1 != id2 || id1 != s.MessageID(msg) {
		t.Errorf("Message-IDs %q and %q, want both %q", id1, id2, s.MessageID(msg))
	}
	if other := s.MessageID(mail.Message{TenantID: "other", Key: msg.Key}); other == id1 {
		t.Errorf("another tenant's delivery with the same key has the same Message-ID %s", other)
	}
	from, err := netmail.ParseAddress(r.header.Get("From"))
	if err != nil || from.Name != "Acme <b>Shop</b>" || from.Address != "noreply@parley.example" {
		t.Errorf("From %q (%v)", r.header.Get("From"), err)
	}
	if rt := r.header.Get("Reply-To"); !strings.Contains(rt, "support@acme.example") {
		t.Errorf("Reply-To %q", rt)
	}
	subj, _ := new(mime.WordDecoder).DecodeHeader(r.header.Get("Subject"))
	if subj != "Your conversation with Acme <b>Shop</b>" {
		t.Errorf("Subject %q", subj)
	}
	if to := r.meta.Envelope.To; len(to) != 1 || to[0] != "visitor@example.com" {
		t.Errorf("RCPT TO %v", to)
	}

	// HTML: every user-provided string escaped, nothing of it live.
	for _, bad := range []string{"<script", "<img src=x", "<b>Shop", "<i>Dana", "<us>", "onerror=alert(1)>"} {
		if strings.Contains(r.html, bad) {
			t.Errorf("HTML contains unescaped %q", bad)
		}
	}
	for _, want := range []string{"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;", "&amp; &#34;quoted&#34;", "Acme &lt;b&gt;Shop&lt;/b&gt;",
		"&lt;i&gt;Dana&lt;/i&gt;", "Call &lt;us&gt; at 555", `src="https://acme.example/logo.png"`,
		`href="https://parley.example/v1/shared/tok?a=1&amp;b=2"`, "background:#112233", "second line",
		"<strong>You</strong> · " + want1, "<strong>Assistant</strong> · " + want2, "<strong>&lt;i&gt;Dana&lt;/i&gt;</strong> · " + want2,
		"America/New_York (EST)", "Sunday, 8 March 2026"} {
		if !strings.Contains(r.html, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	// Plain text: the same facts, verbatim.
	for _, want := range []string{"[" + want1 + "] You:\n  " + hostile + "\n  second line", "[" + want2 + "] Assistant:\n  Let me check.",
		"[" + want2 + "] <i>Dana</i>:", "https://parley.example/v1/shared/tok?a=1&b=2", "Acme <b>Shop</b> · Call <us> at 555 · support@acme.example"} {
		if !strings.Contains(r.text, want) {
			t.Errorf("text lacks %q:\n%s", want, r.text)
		}
	}
	for _, part := range []string{r.text, r.html} {
		if strings.Contains(part, "system-only note") {
			t.Error("a system message is in the transcript")
		}
	}
}

// TestAgentTranscript: the agent's copy names the visitor, the channel and
// the conversation; a time zone east of UTC moves a message to the next day.
func TestAgentTranscript(t *testing.T) {
	at := time.Date(2026, 7, 1, 22, 10, 0, 0, time.UTC)
	wantTime := at.Add(9 * time.Hour).Format("15:04") // Asia/Tokyo, UTC+9, no DST
	msg, err := mail.RenderTranscript(mail.Branding{}, mail.Conversation{TenantID: "t", ID: "c-9", Channel: "whatsapp", VisitorName: "Gentle <Otter>"},
		[]mail.TranscriptMessage{{At: at, Role: mail.RoleVisitor, Text: "hello"}}, "Asia/Tokyo", mail.AudienceAgent)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Subject != "Transcript: c-9 (Gentle <Otter>)" || msg.FromName != "Parley" {
		t.Errorf("subject %q from %q", msg.Subject, msg.FromName)
	}
	for _, want := range []string{"Thursday, 2 July 2026", "<strong>Gentle &lt;Otter&gt;</strong> · " + wantTime, "on whatsapp", "Asia/Tokyo (JST)"} {
		if !strings.Contains(msg.HTML, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if !strings.Contains(msg.Text, "["+wantTime+"] Gentle <Otter>:\n  hello") {
		t.Errorf("text:\n%s", msg.Text)
	}
}

// TestRenderRejectsBadInput: each bad value is a FieldError naming it.
func TestRenderRejectsBadInput(t *testing.T) {
	conv := mail.Conversation{ID: "c"}
	cases := []struct {
		field string
		b     mail.Branding
		c     mail.Conversation
		tz    string
	}{
		{"time_zone", mail.Branding{}, conv, "Mars/Olympus"},
		{"time_zone", mail.Branding{}, conv, "Local"},
		{"branding.primary_color", mail.Branding{PrimaryColor: "red;background:url(x)"}, conv, ""},
		{"branding.accent_color", mail.Branding{AccentColor: "#12"}, conv, ""},
		{"branding.logo_url", mail.Branding{LogoURL: "javascript:alert(1)"}, conv, ""},
		{"branding.logo_url", mail.Branding{LogoURL: "http://acme.example/logo.png"}, conv, ""},
		{"branding.reply_to", mail.Branding{ReplyTo: "Support <s@acme.example>"}, conv, ""},
		{"branding.name", mail.Branding{Name: "Acme\r\nBcc: x@evil.example"}, conv, ""},
		{"conversation.link", mail.Branding{}, mail.Conversation{ID: "c", Link: "javascript:alert(1)"}, ""},
		{"conversation.id", mail.Branding{}, mail.Conversation{}, ""},
	}
	for _, tc := range cases {
		_, err := mail.RenderTranscript(tc.b, tc.c, nil, tc.tz, mail.AudienceVisitor)
		var fe *mail.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field {
			t.Errorf("%+v %q: got %v, want a FieldError on %s", tc.b, tc.tz, err, tc.field)
		}
	}
}

// TestReportReady sends the "report ready" mail to the requester and the
// extra recipients (each once) with the download link in both parts.
func TestReportReady(t *testing.T) {
	c, cfg := tlsCatcher(t)
	s, err := mail.NewSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	link := "https://reports.example/dl/r1?sig=a&exp=2"
	exp := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)
	msg, err := mail.RenderReportReady(mail.Branding{Name: "Acme"}, mail.ReportReady{
		TenantID: "acme", Name: `Leads <last 30 days>`, DownloadURL: link, ExpiresAt: exp,
		To: []string{"owner@acme.example"}, Extra: []string{"boss@acme.example", "Owner@acme.example"},
	}, "Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	msg.Key = "report/r1"
	if err := s.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	got := receivedMail(t, c)
	if len(got) != 1 {
		t.Fatalf("received %d", len(got))
	}
	r := got[0]
	if rc := strings.Join(r.meta.Envelope.To, ","); rc != "owner@acme.example,boss@acme.example" {
		t.Errorf("RCPT TO %s", rc)
	}
	wantExp := exp.Add(time.Hour).Format("15:04") // CET, UTC+1 in January
	if !strings.Contains(r.html, `href="https://reports.example/dl/r1?sig=a&amp;exp=2"`) || !strings.Contains(r.html, "Leads &lt;last 30 days&gt;") ||
		!strings.Contains(r.html, wantExp+" Europe/Berlin (CET)") {
		t.Errorf("HTML:\n%s", r.html)
	}
	if !strings.Contains(r.text, link) || !strings.Contains(r.text, `"Leads <last 30 days>"`) {
		t.Errorf("text:\n%s", r.text)
	}
	_, err = mail.RenderReportReady(mail.Branding{}, mail.ReportReady{Name: "x", DownloadURL: link, To: []string{"ok@x.example"}, Extra: []string{"not an address"}}, "")
	var fe *mail.FieldError
	if !errors.As(err, &fe) || fe.Field != "extra[0]" {
		t.Errorf("bad extra recipient: %v", err)
	}
}

// TestSendImplicitTLS: PARLEY_SMTP_TLS=tls speaks TLS from the first byte
// (SMTPS) and logs in; a server certificate from an untrusted CA is refused.
func TestSendImplicitTLS(t *testing.T) {
	c, cfg := tlsCatcherMode(t, true)
	s, err := mail.NewSender(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m := mail.Message{To: []string{"a@example.com"}, Subject: "hi", Text: "plain only"}
	if err := s.Send(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	got, _ := c.Store().List()
	if len(got) != 1 || !got[0].Envelope.TLS || got[0].Envelope.AuthUser != "parley" {
		t.Fatalf("received %+v", got)
	}
	cfg.TLSCA = ""
	s, _ = mail.NewSender(cfg)
	if err := s.Send(context.Background(), m); err == nil || mail.Classify(err) != mail.Transient {
		t.Errorf("untrusted certificate: %v, want a transient error", err)
	}
}
