package reporting_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/services/reporting"
)

// The events of many partitions read in one round are written with one
// ClickHouse insert per table (events, messages, message_tokens,
// conversations), not one per partition, and projected exactly.
func TestProjectorInsertsARoundOncePerTable(t *testing.T) {
	gate := make(chan struct{})
	f := startEmptyWith(t, func(c *reporting.Config) {
		c.ProjectorBatch = 1000
		// Hold the projector until every event is in the log, so that it
		// reads them in (at most) two rounds.
		c.Wrap = func(h partition.Handler) partition.Handler {
			return func(ctx context.Context, b partition.Batch) error {
				select {
				case <-gate:
				case <-ctx.Done():
					return ctx.Err()
				}
				return h(ctx, b)
			}
		}
	})
	ctx := context.Background()
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: f.ch.Addr, Database: f.ch.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	inserts := func() uint64 {
		var n uint64
		if err := ch.QueryRow(ctx, `SELECT value FROM system.events WHERE event = 'InsertQuery'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := inserts()
	want := map[string]int{}
	parts := map[int]bool{}
	for i := range 48 {
		id := fmt.Sprintf("r%02d", i)
		f.publishConv(t, id, 2)
		want[id] = 2
		parts[partition.Of("acme", id, partition.DefaultPartitions)] = true
	}
	close(gate)
	f.waitProjected(t)
	f.expectCounts(t, want)
	// At most two rounds of four tables; one insert per table per
	// partition would take 4 per partition touched.
	if n := inserts() - before; n > 8 {
		t.Fatalf("%d ClickHouse inserts for the events of %d partitions, want at most 8 (two rounds of 4 tables)", n, len(parts))
	}
	if len(parts) < 8 {
		t.Fatalf("the events span %d partitions only", len(parts))
	}
}
