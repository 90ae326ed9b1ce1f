package tenancy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	// Migrating twice is a no-op.
	if err := Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	return NewStore(pool)
}

func TestKeysAuthenticateToTheirTenant(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.CreateTenant(ctx, "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTenant(ctx, "acme", "Acme"); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate tenant: %v", err)
	}
	if err := s.CreateTenant(ctx, "bad.id", ""); err == nil {
		t.Fatal("tenant id with a dot accepted")
	}
	if _, _, err := s.CreateAPIKey(ctx, "acme", "x", []string{"superuser"}); err == nil {
		t.Fatal("unknown scope accepted")
	}
	if _, _, err := s.CreateAPIKey(ctx, "nobody", "x", []string{"read"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("key for unknown tenant: %v", err)
	}
	key, id, err := s.CreateAPIKey(ctx, "acme", "widget", []string{grpcx.ScopeIngest})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Authenticate(ctx, key)
	if err != nil || p.TenantID != "acme" || p.KeyID != id || !p.Has(grpcx.ScopeIngest) || p.Has(grpcx.ScopeRead) {
		t.Fatalf("authenticate: %+v %v", p, err)
	}
	// A wrong secret for a real key id, a malformed key, an unknown key.
	wrong := key[:len(key)-1] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", key[len(key)-1])+1)%16])
	for _, k := range []string{wrong, "nonsense", "pk_0000000000000000_" + strings.Repeat("a", 64)} {
		if _, err := s.Authenticate(ctx, k); !errors.Is(err, grpcx.ErrInvalidKey) {
			t.Fatalf("key %q: want ErrInvalidKey, got %v", k, err)
		}
	}
	// The stored hash is not the key.
	var stored []byte
	if err := s.pool.QueryRow(ctx, `SELECT secret_sha256 FROM api_keys WHERE key_id = $1`, id).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(key, string(stored)) || len(stored) != 32 {
		t.Fatal("secret not stored as a SHA-256")
	}
	// Revocation takes effect once the cache entry expires.
	if err := s.RevokeAPIKey(ctx, "other", id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking through another tenant: %v", err)
	}
	if err := s.RevokeAPIKey(ctx, "acme", id); err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return time.Now().Add(CacheTTL + time.Second) }
	if _, err := s.Authenticate(ctx, key); !errors.Is(err, grpcx.ErrInvalidKey) {
		t.Fatalf("revoked key: want ErrInvalidKey, got %v", err)
	}
	// It stays refused even from the grace cache: the database answered.
	s.now = func() time.Time { return time.Now().Add(2*CacheTTL + time.Second) }
	if _, err := s.Authenticate(ctx, key); !errors.Is(err, grpcx.ErrInvalidKey) {
		t.Fatalf("revoked key: want ErrInvalidKey, got %v", err)
	}
}

func TestParseKey(t *testing.T) {
	if _, _, ok := ParseKey("pk_0123456789abcdef_" + strings.Repeat("f", 64)); !ok {
		t.Fatal("valid key rejected")
	}
	for _, k := range []string{"", "pk_", "pk_short_x", "sk_0123456789abcdef_" + strings.Repeat("f", 64)} {
		if _, _, ok := ParseKey(k); ok {
			t.Fatalf("%q accepted", k)
		}
	}
}
