// Package mailcatcher is the local stack's SMTP server: it accepts every
// message (github.com/emersion/go-smtp) and stores it in a directory, where
// `parleyctl mail list|show` and tests read it. It is for development and
// tests only: it delivers nothing.
package mailcatcher

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Options configure a catcher.
type Options struct {
	// Dir receives the messages (created if missing).
	Dir string
	// Addr is the listen address; "127.0.0.1:0" (the default) picks a free port.
	Addr string
	// TLS, when set, offers STARTTLS with this configuration, or, with
	// ImplicitTLS, speaks TLS from the first byte (SMTPS).
	TLS         *tls.Config
	ImplicitTLS bool
	// Users, when set, makes AUTH PLAIN required with these user names and
	// passwords; otherwise clients may send without authenticating and any
	// credentials are accepted.
	Users map[string]string
	// MaxMessageBytes bounds one message (default 10 MiB).
	MaxMessageBytes int64
}

// Catcher is a running SMTP catcher.
type Catcher struct {
	srv   *smtp.Server
	ln    net.Listener
	store *Store
	done  chan struct{}
}

// Start listens on opts.Addr and serves until Close.
func Start(opts Options) (*Catcher, error) {
	if opts.Dir == "" {
		return nil, errors.New("mailcatcher: a directory is required")
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("mailcatcher: %w", err)
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 10 << 20
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("mailcatcher: %w", err)
	}
	if opts.ImplicitTLS {
		if opts.TLS == nil {
			ln.Close()
			return nil, errors.New("mailcatcher: ImplicitTLS needs TLS")
		}
		ln = tls.NewListener(ln, opts.TLS)
	}
	c := &Catcher{ln: ln, store: &Store{Dir: opts.Dir}, done: make(chan struct{})}
	srv := smtp.NewServer(smtp.BackendFunc(func(conn *smtp.Conn) (smtp.Session, error) {
		return &session{store: c.store, users: opts.Users, conn: conn}, nil
	}))
	srv.Domain = "parley-mailcatcher.localhost"
	srv.TLSConfig = opts.TLS
	srv.MaxMessageBytes = opts.MaxMessageBytes
	srv.MaxRecipients = 100
	srv.ReadTimeout, srv.WriteTimeout = time.Minute, time.Minute
	// Without TLS, AUTH is still offered so that clients configured with
	// credentials work against the local stack.
	srv.AllowInsecureAuth = opts.TLS == nil
	c.srv = srv
	go func() {
		defer close(c.done)
		_ = srv.Serve(ln)
	}()
	return c, nil
}

// Addr is the address the catcher listens on (host:port).
func (c *Catcher) Addr() string { return c.ln.Addr().String() }

// Store is where the catcher keeps what it received.
func (c *Catcher) Store() *Store { return c.store }

// Close stops accepting connections and waits briefly for open sessions.
func (c *Catcher) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := c.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = c.srv.Close()
	}
	<-c.done
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// session is one SMTP connection.
type session struct {
	store    *Store
	users    map[string]string
	conn     *smtp.Conn
	authUser string
	from     string
	to       []string
}

var _ smtp.AuthSession = (*session)(nil)

func (s *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (s *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(_, username, password string) error {
		if s.users != nil {
			if want, ok := s.users[username]; !ok || want != password {
				return smtp.ErrAuthFailed
			}
		}
		s.authUser = username
		return nil
	}), nil
}

func (s *session) Mail(from string, _ *smtp.MailOptions) error {
	if s.users != nil && s.authUser == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *session) Data(r io.Reader) error {
	raw, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, tlsOn := s.conn.TLSConnectionState() // STARTTLS or implicit TLS
	env := Envelope{From: s.from, To: append([]string(nil), s.to...), AuthUser: s.authUser, TLS: tlsOn}
	if _, err := s.store.Save(env, bytes.NewReader(raw)); err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "cannot store the message"}
	}
	return nil
}

func (s *session) Reset()        { s.from, s.to = "", nil }
func (s *session) Logout() error { return nil }
