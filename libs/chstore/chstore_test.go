package chstore_test

import (
	"context"
	"reflect"
	"testing"
	"testing/fstest"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
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
