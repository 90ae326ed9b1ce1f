package convrow

import (
	"context"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
	"github.com/parley-dev/parley/services/reporting/internal/schema"
)

// TestMigratedTableMatchesColumns migrates a real ClickHouse and checks that
// the conversations table the migrations make has exactly the declared
// columns (system.columns lists them in table order; 18.16 has no position
// column), in order and type; then that a row written through a Batch reads
// back through Scan as the state it came from.
func TestMigratedTableMatchesColumns(t *testing.T) {
	ctx := context.Background()
	db := testenv.ClickHouse(t)
	conn, err := chstore.Open(ctx, config.ClickHouse{Addr: db.Addr, Database: db.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := schema.Migrate(ctx, conn, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT name, type FROM system.columns WHERE database = ? AND table = 'conversations'`, db.Database)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var name, typ string
		if err := rows.Scan(&name, &typ); err != nil {
			t.Fatal(err)
		}
		got = append(got, name+" "+typ)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range Columns() {
		want = append(want, c.Name+" "+c.Type)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("migrated conversations table:\n%s\nwant (convrow.Columns):\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	b := NewBatch()
	full := Full()
	if err := b.Add(full); err != nil {
		t.Fatal(err)
	}
	batch, err := conn.PrepareBatch(ctx, `INSERT INTO conversations (`+Names()+`)`)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range b.Columns() {
		if err := batch.Column(i).Append(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		t.Fatal(err)
	}
	back, err := Scan(conn.QueryRow(ctx, `SELECT `+Names()+` FROM conversations FINAL WHERE tenant_id = 'acme' AND conversation_id = 'c1'`))
	if err != nil {
		t.Fatal(err)
	}
	// DateTime columns keep seconds; started_at keeps microseconds through
	// started_at_us.
	want2 := *full
	for _, tm := range []*convstate.State{&want2} {
		tm.LastActivityAt, tm.EndedAt = tm.LastActivityAt.Truncate(1e9), tm.EndedAt.Truncate(1e9)
		tm.LastMessageAt, tm.HandoffAt, tm.TakeoverAt = tm.LastMessageAt.Truncate(1e9), tm.HandoffAt.Truncate(1e9), tm.TakeoverAt.Truncate(1e9)
	}
	if !reflect.DeepEqual(*back, want2) {
		t.Fatalf("read back:\n%+v\nwant\n%+v", *back, want2)
	}
}
