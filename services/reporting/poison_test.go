package reporting_test

import (
	"context"
	"fmt"
	"github.com/parley-dev/parley/libs/partition/partitiontest"
	"github.com/parley-dev/parley/libs/testsvc"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// An event whose rows ClickHouse itself refuses (here a materialized view
// on events cannot parse a value of it: CANNOT_PARSE_TEXT) is dead-lettered
// and holds its conversation; the projector does not pause, and every other
// conversation keeps projecting.
func TestClickHouseRefusalDeadLetters(t *testing.T) {
	ctx := context.Background()
	f := startEmpty(t)
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: f.ch.Addr, Database: f.ch.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	waitUntil(t, "the events table", func() bool {
		var n uint64
		return ch.QueryRow(ctx, `SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = 'events'`).Scan(&n) == nil && n == 1
	})
	if err := ch.Exec(ctx, `CREATE MATERIALIZED VIEW refuse_poison ENGINE = Memory AS
		SELECT toUInt8(if(position(payload_json, 'poison-pill') > 0, 'poison-pill', '0')) AS x FROM events`); err != nil {
		t.Fatal(err)
	}
	f.publishConv(t, "q00", 1)
	msg := func(text string, sec int) *eventv1.Envelope {
		return &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: "q00", Producer: "ingest",
			OccurredAt: timestamppb.New(f.now.Add(-time.Hour + time.Duration(sec)*time.Second)),
			Payload:    &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text}}}
	}
	poison, after := msg("poison-pill", 2), msg("after", 3)
	f.publishEnv(t, poison)
	f.publishEnv(t, after)
	want := map[string]int{}
	for i := 1; i < 10; i++ {
		id := fmt.Sprintf("q%02d", i)
		f.publishConv(t, id, 3)
		want[id] = 3
	}
	f.waitProjected(t)
	if !testsvc.CheckReady(f.cfg.AdminAddr, "projector") {
		t.Fatal("the projector is paused")
	}
	d := partitiontest.DeadLetters(t, f.bus.JetStream(), "")
	if len(d) != 2 || !strings.Contains(d[poison.GetEventId()], "code: 6") || !strings.HasPrefix(d[after.GetEventId()], "held") {
		t.Fatalf("dead letters: %v", d)
	}
	f.expectCounts(t, want)
	// The held conversation keeps what came before the refused event. (Its
	// raw events rows were written: ClickHouse stores a block in the table
	// before a view refuses it.)
	if got := f.projected(t)["q00"]; got.messages != 1 || got.convMessages != 1 || got.convEvents != 2 {
		t.Fatalf("q00: projected %+v, want 1 message and a conversation of 2 events", got)
	}
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: f.pgURL, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	held, err := partition.Held(ctx, pool, "reporting-projector")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := held[partition.Conversation{TenantID: "acme", ConversationID: "q00"}]; !ok || len(held) != 1 {
		t.Fatalf("held: %v", held)
	}
}
