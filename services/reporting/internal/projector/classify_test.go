package projector_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/services/reporting/internal/projector"
)

// TestClassifyClickHouseErrors classifies errors a real ClickHouse server
// and the real driver return: refusals of the data are permanent, outages,
// timeouts and errors that are no fault of the data are transient.
func TestClassifyClickHouseErrors(t *testing.T) {
	ctx := context.Background()
	db := testenv.ClickHouse(t)
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: db.Addr, Database: db.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if err := ch.Exec(ctx, `CREATE TABLE guarded (s String) ENGINE = Memory`); err != nil {
		t.Fatal(err)
	}
	// A materialized view that cannot parse one value makes the server
	// refuse inserts of it (CANNOT_PARSE_TEXT).
	if err := ch.Exec(ctx, `CREATE MATERIALIZED VIEW guard ENGINE = Memory AS SELECT toUInt8(if(s = 'poison', s, '0')) AS x FROM guarded`); err != nil {
		t.Fatal(err)
	}
	insert := func(v string) error {
		b, err := ch.PrepareBatch(ctx, `INSERT INTO guarded (s)`)
		if err != nil {
			return err
		}
		if err := b.Append(v); err != nil {
			return err
		}
		return b.Send()
	}
	exec := func(q string) func() error { return func() error { return ch.Exec(ctx, q) } }
	cases := []struct {
		name      string
		run       func() error
		code      int32 // the server's exception code; 0 for none
		permanent bool
	}{
		{"insert refused by the server", func() error { return insert("poison") }, 6, true},
		{"unparseable number", exec(`SELECT toUInt8('x1')`), 6, true},
		{"unparseable date", exec(`SELECT toDate('2024-13-45x')`), 6, true},
		{"unknown table", exec(`INSERT INTO missing (s) VALUES ('a')`), 60, false},
		{"query timeout", exec(`SELECT sleep(3) SETTINGS max_execution_time = 1`), 159, false},
		{"server unreachable", func() error {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := l.Addr().String()
			l.Close()
			c, err := chstore.Open(ctx, config.ClickHouse{Addr: addr, Database: db.Database, User: "default"})
			if err != nil {
				return err
			}
			defer c.Close()
			return c.Exec(ctx, `SELECT 1`)
		}, 0, false},
		{"deadline", func() error {
			dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			return ch.Exec(dctx, `SELECT sleep(2)`)
		}, 0, false},
	}
	if err := insert("fine"); err != nil {
		t.Fatalf("a good insert: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.run()
			if err == nil {
				t.Fatal("no error")
			}
			var ex *clickhouse.Exception
			got := int32(0)
			if errors.As(err, &ex) {
				got = ex.Code
			}
			if got != c.code {
				t.Fatalf("error %v: code %d, want %d", err, got, c.code)
			}
			if p := eventbus.IsPermanent(projector.Classify(err)); p != c.permanent {
				t.Fatalf("%v: permanent %v, want %v", err, p, c.permanent)
			}
		})
	}
	if projector.Classify(nil) != nil {
		t.Fatal("Classify(nil) is not nil")
	}
}
