package chstore_test

import (
	"context"
	"reflect"
	"testing"
	"testing/fstest"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/testenv"
)

func TestStatements(t *testing.T) {
	body := "-- comment\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nCREATE TABLE b (\n  s String -- trailing; not the end\n) ENGINE = Memory;\nSELECT 1"
	got := chstore.Statements(body)
	want := []string{"CREATE TABLE a (x UInt8) ENGINE = Memory", "CREATE TABLE b (\n  s String -- trailing; not the end\n) ENGINE = Memory", "SELECT 1"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}

func TestMigrateAppliesOnceInOrder(t *testing.T) {
	db := testenv.ClickHouse(t)
	ctx := context.Background()
	conn, err := chstore.Open(ctx, config.ClickHouse{Addr: db.Addr, Database: db.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fsys := fstest.MapFS{
		"001_first.sql":  {Data: []byte("CREATE TABLE IF NOT EXISTS t1 (x UInt8) ENGINE = MergeTree ORDER BY x;")},
		"002_second.sql": {Data: []byte("ALTER TABLE t1 ADD COLUMN y String;\nCREATE TABLE IF NOT EXISTS t2 (x UInt8) ENGINE = MergeTree ORDER BY x;")},
	}
	for range 2 { // the second run must apply nothing (ALTER would fail)
		if err := chstore.Migrate(ctx, conn, fsys, nil); err != nil {
			t.Fatal(err)
		}
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM schema_migrations FINAL").Scan(&n); err != nil || n != 2 {
		t.Fatalf("schema_migrations: %d %v", n, err)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = ? AND table = 't1' AND name = 'y'", db.Database).Scan(&n); err != nil || n != 1 {
		t.Fatalf("column y: %d %v", n, err)
	}
	bad := fstest.MapFS{"x_bad.sql": {Data: []byte("SELECT 1")}}
	if err := chstore.Migrate(ctx, conn, bad, nil); err == nil {
		t.Fatal("badly named migration accepted")
	}
}

// TestQueryUserIsReadOnly: the local server's query user reads (with a
// deadline, as reporting's queries have) but cannot insert,
// create, drop or truncate; the writer can.
func TestQueryUserIsReadOnly(t *testing.T) {
	db := testenv.ClickHouse(t)
	ctx := context.Background()
	cfg := config.ClickHouse{Addr: db.Addr, Database: db.Database, User: "default",
		QueryUser: localinfra.ClickHouseQueryUser, QueryPassword: localinfra.ClickHouseQueryPassword}
	w, err := chstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Exec(ctx, "CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x"); err != nil {
		t.Fatal(err)
	}
	insert := func(c driver.Conn, vals ...uint32) error {
		b, err := c.PrepareBatch(ctx, "INSERT INTO t (x)")
		if err != nil {
			return err
		}
		for _, v := range vals {
			if err := b.Append(v); err != nil {
				return err
			}
		}
		return b.Send()
	}
	if err := insert(w, 1, 2, 3); err != nil {
		t.Fatal(err)
	}
	r, err := chstore.OpenQuery(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var sum uint64
	if err := r.QueryRow(qctx, "SELECT sum(x) FROM t").Scan(&sum); err != nil || sum != 6 {
		t.Fatalf("reader: sum = %d, %v; want 6", sum, err)
	}
	if err := insert(r, 4); err == nil {
		t.Error("reader inserted a row")
	}
	for _, stmt := range []string{"DROP TABLE t", "TRUNCATE TABLE t", "CREATE TABLE u (x UInt8) ENGINE = Memory",
		"ALTER TABLE t DELETE WHERE x = 1", "CREATE DATABASE other_" + db.Database, "RENAME TABLE t TO t2"} {
		if err := r.Exec(ctx, stmt); err == nil {
			t.Errorf("reader ran %q", stmt)
		}
	}
	if err := w.QueryRow(ctx, "SELECT sum(x) FROM t").Scan(&sum); err != nil || sum != 6 {
		t.Fatalf("after the reader's attempts: sum = %d, %v; want 6", sum, err)
	}
	// Without a query user, queries use the writer.
	cfg.QueryUser = ""
	r2, err := chstore.OpenQuery(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := insert(r2, 4); err != nil {
		t.Fatalf("writer fallback: %v", err)
	}
}
