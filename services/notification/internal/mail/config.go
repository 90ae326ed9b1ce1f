// Package mail sends Parley's email: an SMTP sender (github.com/wneessen/go-mail)
// with HTML and plain-text alternatives, stable Message-IDs and failures
// classified transient or permanent, and the templates of the mails
// Parley sends (transcripts, "report ready") with each tenant's branding.
package mail

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/mail"
	"os"
	"strings"
	"time"
)

// TLS modes of Config.TLS.
const (
	// TLSNone sends in clear text (the local stack's catcher).
	TLSNone = "none"
	// TLSStartTLS upgrades the connection with STARTTLS and refuses a
	// server that does not offer it (port 587).
	TLSStartTLS = "starttls"
	// TLSImplicit speaks TLS from the first byte (SMTPS, port 465).
	TLSImplicit = "tls"
)

// Config is how the sender reaches the SMTP server, read from PARLEY_SMTP_*.
// The defaults suit the local stack's catcher.
type Config struct {
	// Host and Port of the SMTP server.
	Host string `env:"PARLEY_SMTP_HOST" envDefault:"127.0.0.1"`
	Port int    `env:"PARLEY_SMTP_PORT" envDefault:"1025"`
	// Username and Password authenticate (AUTH); empty: no authentication.
	Username string `env:"PARLEY_SMTP_USERNAME"`
	Password string `env:"PARLEY_SMTP_PASSWORD"`
	// TLS is none, starttls or tls.
	TLS string `env:"PARLEY_SMTP_TLS" envDefault:"none"`
	// TLSCA is a PEM file of CAs trusted besides the system roots (a
	// private or self-signed server certificate).
	TLSCA string `env:"PARLEY_SMTP_TLS_CA"`
	// From is the sender, an address with an optional display name
	// ("Parley <parley@example.com>"); the tenant's brand name replaces
	// the display name.
	From string `env:"PARLEY_SMTP_FROM" envDefault:"Parley <parley@localhost>"`
	// Timeout bounds connecting and each step of one send.
	Timeout time.Duration `env:"PARLEY_SMTP_TIMEOUT" envDefault:"30s"`
}

// from parses Config.From.
func (c Config) from() (*mail.Address, error) {
	a, err := mail.ParseAddress(c.From)
	if err != nil {
		return nil, fmt.Errorf("mail: PARLEY_SMTP_FROM %q: %v", c.From, err)
	}
	return a, nil
}

// validate checks the configuration and builds the TLS settings.
func (c Config) validate() (*tls.Config, error) {
	if c.Host == "" {
		return nil, fmt.Errorf("mail: PARLEY_SMTP_HOST is empty")
	}
	if c.Port <= 0 || c.Port > 65535 {
		return nil, fmt.Errorf("mail: PARLEY_SMTP_PORT %d is not a port", c.Port)
	}
	if c.Timeout <= 0 {
		return nil, fmt.Errorf("mail: PARLEY_SMTP_TIMEOUT must be positive")
	}
	if _, err := c.from(); err != nil {
		return nil, err
	}
	switch c.TLS {
	case TLSNone:
		// PLAIN in clear text only to this machine (go-mail refuses
		// otherwise); say so at start rather than at the first send.
		if c.Username != "" && !loopback(c.Host) {
			return nil, fmt.Errorf("mail: PARLEY_SMTP_USERNAME is set but PARLEY_SMTP_TLS=none would send the password in clear text to %s; use starttls or tls", c.Host)
		}
		return nil, nil
	case TLSStartTLS, TLSImplicit:
	default:
		return nil, fmt.Errorf("mail: PARLEY_SMTP_TLS %q: want none, starttls or tls", c.TLS)
	}
	tc := &tls.Config{ServerName: c.Host, MinVersion: tls.VersionTLS12}
	if c.TLSCA != "" {
		pem, err := os.ReadFile(c.TLSCA)
		if err != nil {
			return nil, fmt.Errorf("mail: PARLEY_SMTP_TLS_CA: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("mail: PARLEY_SMTP_TLS_CA %s holds no PEM certificate", c.TLSCA)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}

func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
