package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testenv"
)

// ctl runs parleyctl against the database at pgURL and returns stdout and
// stderr.
func ctl(t *testing.T, pgURL string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRoot()
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append(args, "--postgres-url", pgURL))
	err = root.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// TestKeysCommands creates server, publishable and platform keys with
// parleyctl, lists and revokes them, and checks what they authenticate as.
func TestKeysCommands(t *testing.T) {
	ctx := context.Background()
	pgURL := testenv.Postgres(t)
	if _, _, err := ctl(t, pgURL, "tenants", "create", "acme"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{
		{"keys", "create", "--tenant", "acme", "--platform"},
		{"keys", "create"},
		{"keys", "create", "--tenant", "acme", "--kind", "publishable"},
		{"keys", "create", "--tenant", "acme", "--kind", "publishable", "--origins", "https://a.example/path"},
		{"keys", "create", "--tenant", "acme", "--kind", "publishable", "--scopes", "read", "--origins", "https://a.example"},
		{"keys", "create", "--tenant", "acme", "--scopes", "operator"},
		{"keys", "create", "--platform", "--scopes", "admin"},
	} {
		if _, _, err := ctl(t, pgURL, bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
	pub, msg, err := ctl(t, pgURL, "keys", "create", "--tenant", "acme", "--kind", "publishable", "--origins", "https://a.example,https://b.example", "--name", "widget")
	if err != nil || !strings.HasPrefix(pub, "pub_") || !strings.Contains(msg, "publishable key") {
		t.Fatalf("publishable key: %v %q %q", err, pub, msg)
	}
	plat, _, err := ctl(t, pgURL, "keys", "create", "--platform", "--name", "on-call")
	if err != nil || !strings.HasPrefix(plat, "plat_") {
		t.Fatalf("platform key: %v %q", err, plat)
	}
	srv, _, err := ctl(t, pgURL, "keys", "create", "--tenant", "acme", "--scopes", "read,rules")
	if err != nil || !strings.HasPrefix(srv, "pk_") {
		t.Fatalf("server key: %v %q", err, srv)
	}

	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := tenancy.NewStore(pool)
	p, err := store.Authenticate(ctx, strings.TrimSpace(pub))
	if err != nil || !p.Publishable() || p.TenantID != "acme" || strings.Join(p.AllowedOrigins, ",") != "https://a.example,https://b.example" {
		t.Fatalf("publishable key authenticates as %+v, %v", p, err)
	}
	pp, err := store.Authenticate(ctx, strings.TrimSpace(plat))
	if err != nil || !pp.Platform() || !pp.Has(grpcx.ScopeOperator) {
		t.Fatalf("platform key authenticates as %+v, %v", pp, err)
	}

	out, _, err := ctl(t, pgURL, "keys", "list")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		p.KeyID + " acme publishable ingest https://a.example,https://b.example widget",
		pp.KeyID + " - platform operator - on-call",
		"acme server read,rules - -",
	} {
		if !strings.Contains(squeeze(out), want) {
			t.Errorf("keys list lacks %q:\n%s", want, out)
		}
	}
	if _, _, err := ctl(t, pgURL, "keys", "revoke", pp.KeyID, "--tenant", "acme"); err == nil {
		t.Error("revoked a platform key through a tenant")
	}
	if out, _, err := ctl(t, pgURL, "keys", "revoke", pp.KeyID, "--platform"); err != nil || !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %v %s", err, out)
	}
	out, _, err = ctl(t, pgURL, "keys", "list", "--platform")
	if err != nil || strings.Contains(out, pp.KeyID) {
		t.Fatalf("revoked platform key still listed: %v\n%s", err, out)
	}
	out, _, err = ctl(t, pgURL, "keys", "list", "--platform", "--revoked")
	if err != nil || !strings.Contains(out, pp.KeyID) || strings.Contains(out, p.KeyID) {
		t.Fatalf("keys list --platform --revoked: %v\n%s", err, out)
	}
}

// TestAuditCommand lists audit records by tenant and age.
func TestAuditCommand(t *testing.T) {
	ctx := context.Background()
	pgURL := testenv.Postgres(t)
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := tenancy.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	w := tenancy.NewAuditWriter(pool, tenancy.AuditConfig{}, nil)
	now := time.Now()
	for _, r := range []grpcx.AuditRecord{
		{At: now.Add(-time.Minute), TenantID: "acme", KeyID: "k1", Method: "/parley.tagging.v1.TaggingService/CreateRule", Code: "OK", Peer: "203.0.113.7"},
		{At: now.Add(-2 * time.Minute), TenantID: "acme", KeyID: "k2", Method: "/parley.ingest.v1.IngestService/Append", Code: "PermissionDenied", Peer: "198.51.100.1"},
		{At: now.Add(-48 * time.Hour), TenantID: "acme", KeyID: "k3", Method: "/old/Call", Code: "OK"},
		{At: now.Add(-time.Minute), TenantID: "beta", KeyID: "k4", Method: "/beta/Call", Code: "OK"},
	} {
		w.Record(r)
	}
	w.Close()
	out, _, err := ctl(t, pgURL, "audit", "list", "--tenant", "acme", "--since", "1h")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(squeeze(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[1], "acme k1 /parley.tagging.v1.TaggingService/CreateRule OK 203.0.113.7") ||
		!strings.Contains(lines[2], "acme k2 /parley.ingest.v1.IngestService/Append PermissionDenied 198.51.100.1") {
		t.Fatalf("audit list --tenant acme --since 1h:\n%s", out)
	}
	out, _, err = ctl(t, pgURL, "audit", "list", "--since", now.Add(-72*time.Hour).UTC().Format(time.RFC3339))
	if err != nil || strings.Count(out, "\n") != 5 {
		t.Fatalf("audit list since 3 days: %v\n%s", err, out)
	}
	if _, _, err := ctl(t, pgURL, "audit", "list", "--since", "yesterday"); err == nil {
		t.Fatal("--since yesterday accepted")
	}
}

// squeeze collapses each line's runs of spaces (tabwriter's padding).
func squeeze(s string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n")
}
