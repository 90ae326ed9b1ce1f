// Package share signs and verifies links that open one conversation without
// an API key until they expire. A token carries the tenant, the
// conversation and the expiry, signed with HMAC-SHA256; it is pure (the
// clock is passed in).
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

// Sign returns a token for the conversation valid until expires.
func (s *Signer) Sign(tenant, conversation string, expires time.Time) string {
	payload := tenant + ":" + conversation + ":" + strconv.FormatInt(expires.Unix(), 10)
	return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(s.mac(payload))
}

// Verify checks a token at time now and returns what it grants.
func (s *Signer) Verify(token string, now time.Time) (tenant, conversation string, expires time.Time, err error) {
	p64, sig64, ok := strings.Cut(token, ".")
	if !ok || len(token) > 1024 {
		return "", "", time.Time{}, ErrMalformed
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sig, err2 := base64.RawURLEncoding.DecodeString(sig64)
	if err1 != nil || err2 != nil {
		return "", "", time.Time{}, ErrMalformed
	}
	if !hmac.Equal(sig, s.mac(string(payload))) {
		return "", "", time.Time{}, ErrSignature
	}
	parts := strings.Split(string(payload), ":")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return "", "", time.Time{}, ErrMalformed
	}
	exp, err := strconv.ParseInt(parts[2], 10, 64)
	if err != nil {
		return "", "", time.Time{}, ErrMalformed
	}
	expires = time.Unix(exp, 0).UTC()
	if !now.Before(expires) {
		return "", "", expires, ErrExpired
	}
	return parts[0], parts[1], expires, nil
}

func (s *Signer) mac(payload string) []byte {
	m := hmac.New(sha256.New, s.secret)
	m.Write([]byte("parley-share-v1\n" + payload))
	return m.Sum(nil)
}
