package synthetic_test

import (
	"context"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/services/reporting/internal/schema"
	"github.com/parley-dev/parley/services/reporting/synthetic"
)

func TestInsert(t *testing.T) {
	db := testenv.ClickHouse(t)
	ctx := context.Background()
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: db.Addr, Database: db.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := schema.Migrate(ctx, ch, nil); err != nil {
		t.Fatal(err)
	}
	end := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	if err := synthetic.Insert(ctx, ch, synthetic.Options{Tenant: "acme", Prefix: "s-", N: 1200, Span: 12 * time.Hour, End: end, Messages: true}); err != nil {
		t.Fatal(err)
	}
	var convs, active, refunds, msgs uint64
	var newest, oldest int64
	if err := ch.QueryRow(ctx, `SELECT count(), countIf(status = 'active'), max(started_at_us), min(started_at_us) FROM conversations WHERE tenant_id = 'acme' AND startsWith(conversation_id, 's-')`).
		Scan(&convs, &active, &newest, &oldest); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueryRow(ctx, `SELECT count(), countIf(text = 'I want a refund') FROM messages WHERE tenant_id = 'acme'`).Scan(&msgs, &refunds); err != nil {
		t.Fatal(err)
	}
	if convs != 1200 || active != 400 || msgs != 1200 || refunds != 2 {
		t.Fatalf("conversations %d (active %d), messages %d (refunds %d)", convs, active, msgs, refunds)
	}
	if newest != end.UnixMicro() || oldest != end.Add(-12*time.Hour).UnixMicro()+(12*time.Hour).Microseconds()/1200 {
		t.Fatalf("starts from %d to %d", oldest, newest)
	}
}
