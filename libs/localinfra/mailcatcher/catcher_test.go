package mailcatcher_test

import (
	"errors"
	"net/smtp"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/parley-dev/parley/libs/localinfra/mailcatcher"
)

// A message as a mail client writes it: RFC 2047 subject, base64 text
// part, quoted-printable HTML part.
const sample = "From: =?utf-8?q?J=C3=BCrgen?= <j@example.com>\r\n" +
	"To: a@example.com, b@example.com\r\n" +
	"Subject: =?utf-8?b?R3LDvMOfZQ==?= from\r\n the catcher\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/alternative; boundary=BOUND\r\n" +
	"\r\n" +
	"--BOUND\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"SGVsbG8gV2VsdCDinJMKc2Vjb25kIGxp\r\nbmU=\r\n" +
	"--BOUND\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"<p>Hello =3D Welt</p>\r\n" +
	"--BOUND--\r\n"

// TestCatcherStoresWhatItReceives sends with the standard library's SMTP
// client and reads the message back: envelope, decoded headers, text part.
func TestCatcherStoresWhatItReceives(t *testing.T) {
	c, err := mailcatcher.Start(mailcatcher.Options{Dir: filepath.Join(t.TempDir(), "mail")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := smtp.SendMail(c.Addr(), nil, "bounce@example.com", []string{"a@example.com", "b@example.com"}, []byte(sample)); err != nil {
		t.Fatal(err)
	}
	list, err := c.Store().List()
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	m := list[0]
	if m.Envelope.From != "bounce@example.com" || strings.Join(m.Envelope.To, ",") != "a@example.com,b@example.com" || m.Envelope.TLS {
		t.Errorf("envelope %+v", m.Envelope)
	}
	if got := m.Header("subject"); got != "Grüße from the catcher" {
		t.Errorf("subject %q", got)
	}
	if got := m.Header("From"); got != "Jürgen <j@example.com>" {
		t.Errorf("from %q", got)
	}
	// The random part after '-' finds the message, as does the whole id.
	_, suffix, _ := strings.Cut(m.ID, "-")
	for _, id := range []string{m.ID, suffix, m.ID[:15]} {
		full, err := c.Store().Load(id)
		if err != nil {
			t.Fatalf("load %q: %v", id, err)
		}
		if full.Text != "Hello Welt ✓\nsecond line" || full.HTML != "<p>Hello = Welt</p>" {
			t.Errorf("text %q html %q", full.Text, full.HTML)
		}
		if string(full.Raw) != sample {
			t.Errorf("raw differs:\n%q", full.Raw)
		}
	}
	for _, id := range []string{"", "../" + m.ID, "nope", m.ID + "x"} {
		if _, err := c.Store().Load(id); !errors.Is(err, mailcatcher.ErrNotFound) {
			t.Errorf("load %q: %v, want ErrNotFound", id, err)
		}
	}
}

// TestCatcherRequiresLogin: with Users set, mail without AUTH is refused
// and nothing is stored.
func TestCatcherRequiresLogin(t *testing.T) {
	c, err := mailcatcher.Start(mailcatcher.Options{Dir: filepath.Join(t.TempDir(), "mail"), Users: map[string]string{"u": "p"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := smtp.SendMail(c.Addr(), nil, "x@example.com", []string{"a@example.com"}, []byte(sample)); err == nil {
		t.Fatal("unauthenticated mail accepted")
	}
	// net/smtp sends PLAIN in clear text to localhost only; the catcher
	// allows it without TLS.
	if err := smtp.SendMail(c.Addr(), smtp.PlainAuth("", "u", "wrong", "127.0.0.1"), "x@example.com", []string{"a@example.com"}, []byte(sample)); err == nil {
		t.Fatal("wrong password accepted")
	}
	if list, _ := c.Store().List(); len(list) != 0 {
		t.Fatalf("stored %d messages", len(list))
	}
	if err := smtp.SendMail(c.Addr(), smtp.PlainAuth("", "u", "p", "127.0.0.1"), "x@example.com", []string{"a@example.com"}, []byte(sample)); err != nil {
		t.Fatal(err)
	}
	if list, _ := c.Store().List(); len(list) != 1 || list[0].Envelope.AuthUser != "u" {
		t.Fatalf("stored %+v", list)
	}
}

// FuzzParse: any bytes an SMTP client sends parse without panicking, and
// what comes out is valid UTF-8.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("Subject: =?iso-8859-1?q?caf=E9?=\r\n\r\nbody"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n--a--\r\n"))
	f.Add([]byte("Content-Transfer-Encoding: base64\r\n\r\n!!!!"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := mailcatcher.Parse(raw)
		if err != nil {
			return
		}
		for _, h := range p.Headers {
			if !utf8.ValidString(h.Value) {
				t.Fatalf("header %q not UTF-8", h.Value)
			}
		}
		if !utf8.ValidString(p.Text) || !utf8.ValidString(p.HTML) {
			t.Fatal("body not UTF-8")
		}
	})
}
