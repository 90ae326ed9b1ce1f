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
	g := share.Grant{Tenant: "acme", Conversation: "conv-1", LinkID: "l1", Expires: now.Add(time.Hour)}
	tok := s.Sign(g)
	got, err := s.Verify(tok, now)
	if err != nil || got != g {
		t.Fatalf("verify: %+v %v", got, err)
	}
	if got, err := s.Verify(tok, now.Add(time.Hour)); !errors.Is(err, share.ErrExpired) || !got.Expires.Equal(g.Expires) {
		t.Fatalf("expired: %+v %v", got, err)
	}
	if _, err := signer(t, "other").Verify(tok, now); !errors.Is(err, share.ErrSignature) {
		t.Fatalf("other secret: %v", err)
	}
	// Tampering with the payload (another conversation) breaks the signature.
	forged := signer(t, "x").Sign(share.Grant{Tenant: "acme", Conversation: "conv-2", LinkID: "l1", Expires: now.Add(time.Hour)})
	mixed := strings.Split(forged, ".")[0] + "." + strings.Split(tok, ".")[1]
	if _, err := s.Verify(mixed, now); !errors.Is(err, share.ErrSignature) {
		t.Fatalf("tampered: %v", err)
	}
	for _, bad := range []string{"", ".", "abc", "a.b", strings.Repeat("x", 2000)} {
		if _, err := s.Verify(bad, now); err == nil {
			t.Fatalf("%q accepted", bad)
		}
	}
	if _, err := share.NewSigner([]byte("short")); err == nil {
		t.Fatal("short secret accepted")
	}
}

// A token without a link id could not be revoked: it is refused even when
// its signature is right.
func TestTokenWithoutLinkRefused(t *testing.T) {
	s := signer(t, "k")
	tok := s.Sign(share.Grant{Tenant: "acme", Conversation: "conv-1", Expires: now.Add(time.Hour)})
	if _, err := s.Verify(tok, now); !errors.Is(err, share.ErrMalformed) {
		t.Fatalf("token without link id: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	s := signer(f, "k")
	f.Add(s.Sign(share.Grant{Tenant: "acme", Conversation: "c1", LinkID: "l1", Expires: now.Add(time.Hour)}))
	f.Add("bm9wZQ.c2ln")
	f.Fuzz(func(t *testing.T, tok string) {
		g, err := s.Verify(tok, now)
		if err == nil && (g.Tenant == "" || g.Conversation == "" || g.LinkID == "") {
			t.Fatalf("accepted %q without tenant, conversation or link", tok)
		}
	})
}
