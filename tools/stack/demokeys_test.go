package stack

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testenv"
)

// TestDemoKeys: make run's demo, operator and widget keys are written to
// the stack dir, authenticate as what they are for, and are reused by the
// next start.
func TestDemoKeys(t *testing.T) {
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	dir := t.TempDir()
	keys, err := EnsureDemoKeys(ctx, pool, "demo", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	store := tenancy.NewStore(pool)
	for file, key := range map[string]string{"demo-api-key": keys.Demo, "operator-api-key": keys.Operator, "widget-api-key": keys.Widget} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil || strings.TrimSpace(string(b)) != key {
			t.Fatalf("%s holds %q (%v), want %q", file, b, err, key)
		}
	}
	demo, err := store.Authenticate(ctx, keys.Demo)
	if err != nil || demo.TenantID != "demo" || demo.Publishable() || !slices.Equal(demo.Scopes, []string{"ingest", "read", "rules", "admin"}) {
		t.Fatalf("demo key: %+v, %v", demo, err)
	}
	op, err := store.Authenticate(ctx, keys.Operator)
	if err != nil || !op.Platform() || !op.Has(grpcx.ScopeOperator) {
		t.Fatalf("operator key: %+v, %v", op, err)
	}
	w, err := store.Authenticate(ctx, keys.Widget)
	if err != nil || w.TenantID != "demo" || !w.Publishable() || !slices.Equal(w.AllowedOrigins, []string{WidgetOrigin}) {
		t.Fatalf("widget key: %+v, %v", w, err)
	}
	again, err := EnsureDemoKeys(ctx, pool, "demo", dir, nil)
	if err != nil || again != keys {
		t.Fatalf("second start: %+v, %v; want the same keys", again, err)
	}
}
