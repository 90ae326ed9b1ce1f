package tenancy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
)

func TestPublishableKeys(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.CreateTenant(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	pub := func(scopes []string, origins ...string) (string, string, error) {
		return s.CreateKey(ctx, KeySpec{TenantID: "acme", Kind: grpcx.KindPublishable, Scopes: scopes, AllowedOrigins: origins})
	}
	refused := []struct {
		scopes  []string
		origins []string
	}{
		{[]string{"ingest"}, nil},                                   // no origin
		{[]string{"ingest", "read"}, []string{"https://a.example"}}, // more than ingest
		{[]string{"read"}, []string{"https://a.example"}},
		{[]string{"admin"}, []string{"https://a.example"}},
		{[]string{"ingest"}, []string{"a.example"}},
		{[]string{"ingest"}, []string{"ftp://a.example"}},
		{[]string{"ingest"}, []string{"https://a.example/"}},
		{[]string{"ingest"}, []string{"https://a.example/widget"}},
		{[]string{"ingest"}, []string{"https://a.example?x=1"}},
		{[]string{"ingest"}, []string{"https://u:p@a.example"}},
		{[]string{"ingest"}, []string{"https://*.example"}},
		{[]string{"ingest"}, []string{"https://a.example:99999"}},
		{[]string{"ingest"}, []string{"*"}},
		{[]string{"ingest"}, []string{"https://a.example", ""}},
	}
	for _, c := range refused {
		if _, _, err := pub(c.scopes, c.origins...); err == nil {
			t.Errorf("publishable key with scopes %v and origins %q accepted", c.scopes, c.origins)
		}
	}
	if _, _, err := s.CreateKey(ctx, KeySpec{TenantID: "acme", Scopes: []string{"ingest"}, AllowedOrigins: []string{"https://a.example"}}); err == nil {
		t.Error("server key with allowed origins accepted")
	}
	if n := countKeys(t, s); n != 0 {
		t.Fatalf("refused keys were stored: %d rows", n)
	}

	key, id, err := pub([]string{"ingest"}, "https://a.example", "HTTP://B.example:8080")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key, "pub_"+id+"_") {
		t.Fatalf("publishable key %q does not start with pub_<id>_", key)
	}
	p, err := s.Authenticate(ctx, key)
	wantOrigins := []string{"https://a.example", "http://b.example:8080"}
	if err != nil || p.TenantID != "acme" || p.KeyID != id || !p.Publishable() || !slices.Equal(p.AllowedOrigins, wantOrigins) ||
		!p.Has(grpcx.ScopeIngest) || p.Has(grpcx.ScopeRead) {
		t.Fatalf("publishable key authenticates as %+v, %v", p, err)
	}
	// The prefix is part of the key: the same id and secret under another
	// kind's prefix do not authenticate.
	if _, err := s.Authenticate(ctx, "pk_"+strings.TrimPrefix(key, "pub_")); !errors.Is(err, grpcx.ErrInvalidKey) {
		t.Fatalf("publishable key with a server prefix: %v", err)
	}
}

func TestPlatformKeys(t *testing.T) {
	ctx := context.Background()
	s := newStore(t)
	if err := s.CreateTenant(ctx, "acme", ""); err != nil {
		t.Fatal(err)
	}
	// operator is refused on tenant keys, and platform keys hold only it.
	for _, spec := range []KeySpec{
		{TenantID: "acme", Scopes: []string{"operator"}},
		{TenantID: "acme", Scopes: []string{"admin", "operator"}},
		{Scopes: []string{"admin"}},
		{Scopes: []string{"operator", "read"}},
		{Scopes: []string{"operator"}, Kind: grpcx.KindPublishable, AllowedOrigins: []string{"https://a.example"}},
	} {
		if _, _, err := s.CreateKey(ctx, spec); err == nil {
			t.Errorf("key %+v accepted", spec)
		}
	}
	if _, _, err := s.CreateAPIKey(ctx, "", "x", []string{"operator"}); err == nil {
		t.Error("CreateAPIKey without a tenant accepted")
	}
	if n := countKeys(t, s); n != 0 {
		t.Fatalf("refused keys were stored: %d rows", n)
	}
	key, id, err := s.CreateKey(ctx, KeySpec{Name: "ops", Scopes: []string{"operator"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(key, "plat_"+id+"_") {
		t.Fatalf("platform key %q does not start with plat_<id>_", key)
	}
	p, err := s.Authenticate(ctx, key)
	if err != nil || !p.Platform() || p.KeyID != id || !p.Has(grpcx.ScopeOperator) || p.Has(grpcx.ScopeRead) || p.Publishable() {
		t.Fatalf("platform key authenticates as %+v, %v", p, err)
	}
	tenantKey, tenantID, err := s.CreateAPIKey(ctx, "acme", "console", []string{"read", "rules", "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tenantKey, "pk_") {
		t.Fatalf("server key %q does not start with pk_", tenantKey)
	}
	if tp, err := s.Authenticate(ctx, tenantKey); err != nil || tp.Has(grpcx.ScopeOperator) || tp.Kind != grpcx.KindServer {
		t.Fatalf("admin tenant key: %+v, %v", tp, err)
	}

	all, err := s.ListKeys(ctx, KeyFilter{})
	if err != nil || len(all) != 2 {
		t.Fatalf("list all: %+v, %v", all, err)
	}
	plat, err := s.ListKeys(ctx, KeyFilter{Platform: true})
	if err != nil || len(plat) != 1 || plat[0].KeyID != id || plat[0].TenantID != "" || plat[0].Name != "ops" {
		t.Fatalf("list platform: %+v, %v", plat, err)
	}
	acme, err := s.ListKeys(ctx, KeyFilter{TenantID: "acme"})
	if err != nil || len(acme) != 1 || acme[0].KeyID != tenantID || !slices.Equal(acme[0].Scopes, []string{"read", "rules", "admin"}) {
		t.Fatalf("list acme: %+v, %v", acme, err)
	}
	// A platform key is revoked without a tenant, and not through one.
	if err := s.RevokeAPIKey(ctx, "acme", id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking a platform key through a tenant: %v", err)
	}
	if err := s.RevokeAPIKey(ctx, "", tenantID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoking a tenant key as a platform key: %v", err)
	}
	if err := s.RevokeAPIKey(ctx, "", id); err != nil {
		t.Fatal(err)
	}
	if plat, _ := s.ListKeys(ctx, KeyFilter{Platform: true}); len(plat) != 0 {
		t.Fatalf("revoked key listed: %+v", plat)
	}
	if plat, _ := s.ListKeys(ctx, KeyFilter{Platform: true, Revoked: true}); len(plat) != 1 || plat[0].RevokedAt == nil {
		t.Fatalf("revoked key with Revoked: %+v", plat)
	}
}

// TestKeysFromBeforeKindsKeepWorking creates a key on the first schema
// version, then migrates: the key is a server key of its tenant.
func TestKeysFromBeforeKindsKeepWorking(t *testing.T) {
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	first, err := fs.ReadFile(migrations, "migrations/00001_tenancy.sql")
	if err != nil {
		t.Fatal(err)
	}
	if err := pgstore.Migrate(ctx, pool, fstest.MapFS{"00001_tenancy.sql": {Data: first}}, "goose_tenancy", nil); err != nil {
		t.Fatal(err)
	}
	secret := strings.Repeat("ab", 32)
	sum := sha256.Sum256([]byte(secret))
	if _, err := pool.Exec(ctx, `INSERT INTO tenants (tenant_id, name) VALUES ('acme', 'Acme');
		INSERT INTO api_keys (key_id, tenant_id, name, secret_sha256, scopes) VALUES ('0123456789abcdef', 'acme', 'old', '\x`+hex.EncodeToString(sum[:])+`', '{ingest,admin}')`); err != nil {
		t.Fatal(err)
	}
	if err := Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	p, err := NewStore(pool).Authenticate(ctx, "pk_0123456789abcdef_"+secret)
	if err != nil || p.TenantID != "acme" || p.Kind != grpcx.KindServer || p.Publishable() || !p.Has(grpcx.ScopeAdmin) {
		t.Fatalf("old key after migration: %+v, %v", p, err)
	}
}

func countKeys(t *testing.T, s *Store) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM api_keys`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
