package mail

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strings"
	"sync"
	"time"

	gomail "github.com/wneessen/go-mail"
)

// Message is one email, ready to send.
type Message struct {
	// TenantID is the tenant the mail is sent for.
	TenantID string
	// Key identifies the delivery (e.g. subscription and event): the same
	// tenant and key give the same Message-ID, so a retried send is
	// recognisable as the same mail. Empty: a random Message-ID.
	Key string
	// FromName is the sender's display name (the tenant's brand); empty:
	// the one of PARLEY_SMTP_FROM.
	FromName string
	To       []string
	ReplyTo  string
	Subject  string
	// Text is the plain-text body; HTML, when set, its HTML alternative.
	Text, HTML string
}

// Sender sends Messages through one SMTP server. It is safe for concurrent
// use: each Send opens its own connection.
type Sender struct {
	cfg  Config
	tls  *tls.Config
	from *mail.Address
	// now stamps the Date header.
	now func() time.Time
}

// NewSender checks cfg and returns a sender; it does not connect.
func NewSender(cfg Config) (*Sender, error) {
	tc, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	from, _ := cfg.from()
	return &Sender{cfg: cfg, tls: tc, from: from, now: time.Now}, nil
}

// MessageID is the Message-ID header (with its angle brackets) Send gives
// m; "" when m has no Key (Send then picks a random one).
func (s *Sender) MessageID(m Message) string {
	if m.Key == "" {
		return ""
	}
	return "<" + messageID(m, s.from.Address) + ">"
}

func messageID(m Message, from string) string {
	domain := "parley.invalid"
	if _, d, ok := strings.Cut(from, "@"); ok && d != "" {
		domain = d
	}
	sum := sha256.Sum256([]byte(m.TenantID + "\x00" + m.Key))
	return hex.EncodeToString(sum[:16]) + ".parley@" + domain
}

// Send delivers m. Its error, if any, is an *Error: see Classify.
func (s *Sender) Send(ctx context.Context, m Message) error {
	msg, err := s.build(m)
	if err != nil {
		return &Error{Class: Permanent, err: err}
	}
	// Our own dialer, so the connection is closed whatever happens:
	// go-mail leaves it open when STARTTLS or AUTH fails.
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		conns = append(conns, conn)
		mu.Unlock()
		if s.cfg.TLS != TLSImplicit {
			return conn, nil
		}
		tc := tls.Client(conn, s.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, err
		}
		return tc, nil
	}
	opts := []gomail.Option{gomail.WithPort(s.cfg.Port), gomail.WithTimeout(s.cfg.Timeout), gomail.WithDialContextFunc(dial)}
	switch s.cfg.TLS {
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory), gomail.WithTLSConfig(s.tls))
	case TLSImplicit:
		// The connection is TLS from the start (dial); go-mail sees a
		// *tls.Conn, counts it as encrypted and has no STARTTLS to do.
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSOpportunistic), gomail.WithTLSConfig(s.tls))
	}
	if s.cfg.Username != "" {
		auth := gomail.SMTPAuthAutoDiscover
		if s.cfg.TLS == TLSNone {
			auth = gomail.SMTPAuthPlain // loopback only (Config.validate)
		}
		opts = append(opts, gomail.WithSMTPAuth(auth), gomail.WithUsername(s.cfg.Username), gomail.WithPassword(s.cfg.Password))
	}
	c, err := gomail.NewClient(s.cfg.Host, opts...)
	if err != nil {
		return &Error{Class: Permanent, err: err}
	}
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		return classify(err)
	}
	return nil
}

// build turns m into a go-mail message; its errors are the caller's.
func (s *Sender) build(m Message) (*gomail.Msg, error) {
	if len(m.To) == 0 {
		return nil, errors.New("mail: no recipient")
	}
	if m.Text == "" {
		return nil, errors.New("mail: empty text body")
	}
	msg := gomail.NewMsg()
	name := s.from.Name
	if m.FromName != "" {
		name = m.FromName
	}
	if err := msg.FromFormat(oneLine(name), s.from.Address); err != nil {
		return nil, err
	}
	for i, to := range m.To {
		if _, err := mail.ParseAddress(to); err != nil {
			return nil, fmt.Errorf("mail: recipient %d: %v", i, err)
		}
	}
	if err := msg.To(m.To...); err != nil {
		return nil, err
	}
	if m.ReplyTo != "" {
		if err := msg.ReplyTo(m.ReplyTo); err != nil {
			return nil, err
		}
	}
	msg.Subject(oneLine(m.Subject))
	msg.SetDateWithValue(s.now())
	if m.Key != "" {
		msg.SetMessageIDWithValue(messageID(m, s.from.Address))
	} else {
		msg.SetMessageID()
	}
	// Automatic mail: no vacation replies (RFC 3834).
	msg.SetGenHeader("Auto-Submitted", "auto-generated")
	msg.SetGenHeader(gomail.HeaderXAutoResponseSuppress, "All")
	msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	if m.HTML != "" {
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	}
	return msg, nil
}

// oneLine keeps a header value on one line: control characters become spaces.
func oneLine(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }), " ")
}
