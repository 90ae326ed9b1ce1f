// Package share signs and verifies links that open one conversation without
// an API key until they expire or are revoked. A token carries the tenant,
// the conversation, the expiry and the link's id (which revocation is
// checked by), signed with HMAC-SHA256; it is pure (the clock is passed in).
package share

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Errors Verify returns.
var (
	ErrMalformed = errors.New("share: malformed token")
	ErrSignature = errors.New("share: bad signature")
	ErrExpired   = errors.New("share: link expired")
)

// Signer signs and verifies share tokens with one secret.
type Signer struct{ secret []byte }

// NewSigner returns a signer; the secret must be at least 32 bytes.
func NewSigner(secret []byte) (*Signer, error) {
	if len(secret) < 32 {
		return nil, errors.New("share: secret must be at least 32 bytes")
	}
	return &Signer{secret: secret}, nil
}

// Grant is what a token grants: one conversation of one tenant until
// Expires, through the recorded link LinkID.
type Grant struct {
	Tenant, Conversation, LinkID string
	Expires                      time.Time
}

// Sign returns a token for the grant.
func (s *Signer) Sign(g Grant) string {
	payload := g.Tenant + ":" + g.Conversation + ":" + strconv.FormatInt(g.Expires.Unix(), 10) + ":" + g.LinkID
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload))
}

// Verify checks a token at time now and returns what it grants (with
// ErrExpired, the grant's Expires is set). Tokens without a link id (from
// before links were recorded) are malformed: they could not be revoked.
func (s *Signer) Verify(token string, now time.Time) (Grant, error) {
	p64, sig64, ok := strings.Cut(token, ".")
	if !ok || len(token) > 1024 {
		return Grant{}, ErrMalformed
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sig, err2 := base64.RawURLEncoding.DecodeString(sig64)
	if err1 != nil || err2 != nil {
		return Grant{}, ErrMalformed
	}
	if !hmac.Equal(sig, s.mac(string(payload))) {
		return Grant{}, ErrSignature
	}
	parts := strings.Split(string(payload), ":")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" || parts[3] == "" {
		return Grant{}, ErrMalformed
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return Grant{}, ErrMalformed
	}
	g := Grant{Tenant: parts[0], Conversation: parts[1], LinkID: parts[3], Expires: time.Unix(exp, 0).UTC()}
	if !now.Before(g.Expires) {
		return Grant{Expires: g.Expires}, ErrExpired
	}
	return g, nil
}

func (s *Signer) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("parley-share-v2\n" + payload))
	return m.Sum(nil)
}
