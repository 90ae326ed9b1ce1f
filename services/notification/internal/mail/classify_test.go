package mail_test

import (
	"context"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/parley-dev/parley/libs/localinfra/mailcatcher"
	"github.com/parley-dev/parley/services/notification/internal/mail"
)

// refusingSession answers RCPT TO busy@… with 451 and gone@… with 550.
type refusingSession struct{}

func (refusingSession) Mail(string, *smtp.MailOptions) error { return nil }
func (refusingSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	switch {
	case strings.HasPrefix(to, "busy@"):
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 2, 0}, Message: "mailbox busy, try later"}
	case strings.HasPrefix(to, "gone@"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	return nil
}
func (refusingSession) Data(r io.Reader) error { _, err := io.Copy(io.Discard, r); return err }
func (refusingSession) Reset()                 {}
func (refusingSession) Logout() error          { return nil }

func plainConfig(addr string) mail.Config {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return mail.Config{Host: host, Port: p, TLS: mail.TLSNone, From: "noreply@parley.example", Timeout: 5 * time.Second}
}

// TestSendErrorClasses: a 4xx answer, a refused connection and a server
// without the required STARTTLS are transient; a 5xx refusal of the
// recipient and a malformed address are permanent.
func TestSendErrorClasses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return refusingSession{}, nil }))
	srv.Domain = "refusing.test"
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	refusedAddr := closed.Addr().String()
	closed.Close()

	plainCatcher, err := mailcatcher.Start(mailcatcher.Options{Dir: filepath.Join(t.TempDir(), "mail")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = plainCatcher.Close() })
	wantsTLS := plainConfig(plainCatcher.Addr())
	wantsTLS.TLS = mail.TLSStartTLS

	cases := []struct {
		name  string
		cfg   mail.Config
		to    string
		class mail.Class
		code  int
	}{
		{"451 on RCPT", plainConfig(ln.Addr().String()), "busy@example.com", mail.Transient, 451},
		{"550 on RCPT", plainConfig(ln.Addr().String()), "gone@example.com", mail.Permanent, 550},
		{"connection refused", plainConfig(refusedAddr), "someone@example.com", mail.Transient, 0},
		{"no STARTTLS offered", wantsTLS, "someone@example.com", mail.Transient, 0},
		{"malformed address", plainConfig(ln.Addr().String()), "not an address", mail.Permanent, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := mail.NewSender(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = s.Send(context.Background(), mail.Message{To: []string{tc.to}, Subject: "s", Text: "t", Key: "k"})
			if err == nil {
				t.Fatal("send succeeded")
			}
			if got := mail.Classify(err); got != tc.class {
				t.Errorf("class %s, want %s (%v)", got, tc.class, err)
			}
			if mail.IsPermanent(err) != (tc.class == mail.Permanent) {
				t.Errorf("IsPermanent disagrees with Classify")
			}
			var me *mail.Error
			if !errors.As(err, &me) || me.Code != tc.code {
				t.Errorf("error %v: want a *mail.Error with code %d", err, tc.code)
			}
		})
	}
	if got, _ := plainCatcher.Store().List(); len(got) != 0 {
		t.Errorf("the catcher without TLS received %d messages in clear text", len(got))
	}
	// The failed STARTTLS left no connection open: the catcher closes at
	// once instead of waiting for it.
	start := time.Now()
	_ = plainCatcher.Close()
	if d := time.Since(start); d > time.Second {
		t.Errorf("closing the catcher took %s: the sender left its connection open", d)
	}
	// An accepted recipient goes through the same server.
	s, _ := mail.NewSender(plainConfig(ln.Addr().String()))
	if err := s.Send(context.Background(), mail.Message{To: []string{"ok@example.com"}, Subject: "s", Text: "t"}); err != nil {
		t.Fatalf("accepted recipient: %v", err)
	}
}

// TestNewSenderRefusesBadConfig: bad settings are refused at start.
func TestNewSenderRefusesBadConfig(t *testing.T) {
	base := mail.Config{Host: "smtp.example.com", Port: 587, TLS: mail.TLSStartTLS, From: "a@b.example", Timeout: time.Second}
	bad := []func(*mail.Config){
		func(c *mail.Config) { c.TLS = "ssl" },
		func(c *mail.Config) { c.From = "not an address" },
		func(c *mail.Config) { c.Port = 0 },
		func(c *mail.Config) { c.TLS, c.Username = mail.TLSNone, "u" }, // password in clear text to a remote host
		func(c *mail.Config) { c.TLSCA = filepath.Join(t.TempDir(), "missing.pem") },
	}
	for i, f := range bad {
		c := base
		f(&c)
		if _, err := mail.NewSender(c); err == nil {
			t.Errorf("case %d: %+v accepted", i, c)
		}
	}
	if _, err := mail.NewSender(base); err != nil {
		t.Errorf("good config refused: %v", err)
	}
}
