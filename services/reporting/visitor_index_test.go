package reporting_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestVisitorQueriesReadTheVisitorIndex checks that the projector writes
// one visitor_conversations row per conversation with a visitor token (as
// the model says), and that GetVisitor and the visitor_token filter find a
// visitor's conversations through it: with one visitor's rows deleted from
// the index, that visitor is no longer found, while the others still are.
func TestVisitorQueriesReadTheVisitorIndex(t *testing.T) {
	f, vs := startVisits(t)
	ctx := context.Background()
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: f.ch.Addr, Database: f.ch.Database, User: "default"})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()

	wantIndex := map[string][]string{}
	for _, v := range vs {
		if v.visitor != "" {
			wantIndex[v.visitor] = append(wantIndex[v.visitor], "vs-"+v.id)
		}
	}
	rows, err := ch.Query(ctx, `SELECT visitor_token, arraySort(groupArray(conversation_id)) FROM visitor_conversations FINAL
		WHERE tenant_id = 'acme' GROUP BY visitor_token`)
	if err != nil {
		t.Fatal(err)
	}
	gotIndex := map[string][]string{}
	for rows.Next() {
		var token string
		var ids []string
		if err := rows.Scan(&token, &ids); err != nil {
			t.Fatal(err)
		}
		gotIndex[token] = ids
	}
	rows.Close()
	for k := range wantIndex {
		slices.Sort(wantIndex[k])
	}
	if !maps.EqualFunc(gotIndex, wantIndex, slices.Equal) {
		t.Fatalf("visitor index %v, want %v", gotIndex, wantIndex)
	}

	if err := ch.Exec(ctx, `ALTER TABLE visitor_conversations DELETE WHERE tenant_id = 'acme' AND visitor_token = 'vis-2'`); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n uint64
		if err := ch.QueryRow(ctx, `SELECT count() FROM visitor_conversations WHERE visitor_token = 'vis-2'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the index rows of vis-2 were not deleted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := f.client.GetVisitor(f.ctx(), &reportingv1.GetVisitorRequest{VisitorToken: "vis-2"}); status.Code(err) != codes.NotFound {
		t.Fatalf("GetVisitor without index rows: %v, want NotFound", err)
	}
	allTime := &reportingv1.TimeRange{Preset: "all_time"}
	if ids, total := f.list(t, &reportingv1.Filter{TimeRange: allTime, VisitorToken: "vis-2"}, 10); len(ids) != 0 || total != 0 {
		t.Fatalf("visitor filter without index rows: %v (%d)", ids, total)
	}
	v, err := f.client.GetVisitor(f.ctx(), &reportingv1.GetVisitorRequest{VisitorToken: "vis-1"})
	if err != nil || v.ConversationCount != uint64(len(wantIndex["vis-1"])) {
		t.Fatalf("vis-1: %v (%v), want %d conversations", v, err, len(wantIndex["vis-1"]))
	}
	if ids, _ := f.list(t, &reportingv1.Filter{TimeRange: allTime, VisitorToken: "vis-1"}, 10); len(ids) != len(wantIndex["vis-1"]) {
		t.Fatalf("vis-1 list %v, want %v", ids, wantIndex["vis-1"])
	}
}
