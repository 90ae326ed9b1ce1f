package mail_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/parley-dev/parley/services/notification/internal/mail"
)

// TestRenderNoticeEscapesAndKeepsParagraphs: the HTML part escapes what
// an event carries, the text part keeps it as written, paragraphs split
// on blank lines; bad branding names its field.
func TestRenderNoticeEscapesAndKeepsParagraphs(t *testing.T) {
	m, err := mail.RenderNotice(mail.Branding{Name: "Acme", ReplyTo: "help@acme.example"}, mail.Notice{TenantID: "acme",
		Subject: "Parley: message_posted\r\nBcc: x@evil.example", Text: "First line\nsecond line\n\nNext paragraph",
		Details: `{"text": "<script>alert(1)</script>"}`})
	if err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(m.Subject, "\r\n") || m.FromName != "Acme" || m.ReplyTo != "help@acme.example" {
		t.Fatalf("message %+v", m)
	}
	if strings.Contains(m.HTML, "<script>") || !strings.Contains(m.HTML, "&lt;script&gt;") {
		t.Fatalf("HTML not escaped: %s", m.HTML)
	}
	if !strings.Contains(m.HTML, "First line<br>second line</p>") || !strings.Contains(m.HTML, ">Next paragraph</p>") {
		t.Fatalf("paragraphs: %s", m.HTML)
	}
	if !strings.Contains(m.Text, "First line\nsecond line\n\nNext paragraph\n") || !strings.Contains(m.Text, `"<script>alert(1)</script>"`) {
		t.Fatalf("text part:\n%s", m.Text)
	}
	_, err = mail.RenderNotice(mail.Branding{AccentColor: "blue"}, mail.Notice{Subject: "x"})
	var fe *mail.FieldError
	if !errors.As(err, &fe) || fe.Field != "branding.accent_color" {
		t.Fatalf("bad branding: %v", err)
	}
	if !mail.IsPermanent(mail.PermanentError(err)) || mail.Reason(mail.PermanentError(err)) == "" {
		t.Fatal("a render error is permanent with a reason")
	}
}
