package share_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/services/reporting/internal/share"
)

var now = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

func signer(t testing.TB, secret string) *share.Signer {
	s, err := share.NewSigner([]byte(strings.Repeat(secret, 32)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSignVerify(t *testing.T) {
	s := signer(t, "k")
	tok := s.Sign("acme", "conv-1", now.Add(time.Hour))
	tenant, conv, exp, err := s.Verify(tok, now)
	if err != nil || tenant != "acme" || conv != "conv-1" || !exp.Equal(now.Add(time.Hour)) {
		t.Fatalf("verify: %s %s %v %v", tenant, conv, exp, err)
	}
	if _, _, _, err := s.Verify(tok, now.Add(time.Hour)); !errors.Is(err, share.ErrExpired) {
		t.Fatalf("expired: %v", err)
	}
	if _, _, _, err := signer(t, "other").Verify(tok, now); !errors.Is(err, share.ErrSignature) {
		t.Fatalf("other secret: %v", err)
	}
	// Tampering with the payload (another conversation) breaks the signature.
	forged := signer(t, "x").Sign("acme", "conv-2", now.Add(time.Hour))
	mixed := strings.Split(forged, ".")[0] + "." + strings.Split(tok, ".")[1]
	if _, _, _, err := s.Verify(mixed, now); !errors.Is(err, share.ErrSignature) {
		t.Fatalf("tampered: %v", err)
	}
	for _, bad := range []string{"", ".", "abc", "a.b", strings.Repeat("x", 2000)} {
		if _, _, _, err := s.Verify(bad, now); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
	if _, err := share.NewSigner([]byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
}

func FuzzVerify(f *testing.F) {
	s := signer(f, "k")
	f.Add(s.Sign("acme", "c1", now.Add(time.Hour)))
	f.Add("bm9wZQ.c2ln")
	f.Fuzz(func(t *testing.T, tok string) {
		tenant, conv, _, err := s.Verify(tok, now)
		if err == nil && (tenant == "" || conv == "") {
			t.Fatalf("accepted %q without tenant or conversation", tok)
		}
	})
}
