package reporting_test

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/synthetic"
	"google.golang.org/protobuf/proto"
)

// BenchmarkQueriesAt1M reports ListConversations and GetDashboard latency
// (p50, p95) over one tenant with 1,000,000 conversations spread over 60
// days (and one message each), generated inside ClickHouse with INSERT ...
// SELECT FROM numbers() so the benchmark measures queries, not ingest.
// Ingest-to-query throughput is measured by tools/bench.
//
//	go test ./services/reporting -run XXX -bench QueriesAt1M -benchtime 20x
func BenchmarkQueriesAt1M(b *testing.B) {
	f := startEmpty(b)
	ctx := context.Background()
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: f.ch.Addr, Database: f.ch.Database, User: "default"})
	if err != nil {
		b.Fatal(err)
	}
	defer ch.Close()
	const n = 1_000_000
	start := time.Now()
	if err := synthetic.Insert(ctx, ch, synthetic.Options{Tenant: "acme", Prefix: "bench-", N: n, Span: 60 * 24 * time.Hour, End: time.Now(), Messages: true}); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d conversations and messages in %s", n, time.Since(start).Round(time.Millisecond))
	yes := proto.Bool(true)
	lists := map[string]*reportingv1.Filter{
		"default-24h":      {},
		"last-7-days":      {TimeRange: &reportingv1.TimeRange{Preset: "last_7_days"}},
		"all-time":         {TimeRange: &reportingv1.TimeRange{Preset: "all_time"}},
		"30d-combined":     {TimeRange: &reportingv1.TimeRange{Preset: "last_30_days"}, Statuses: []string{"ended"}, Channels: []eventv1.Channel{eventv1.Channel_CHANNEL_WHATSAPP}, Tags: []string{"unidentified-response"}},
		"all-time-text":    {TimeRange: &reportingv1.TimeRange{Preset: "all_time"}, Text: "refund"},
		"30d-text-rare":    {TimeRange: &reportingv1.TimeRange{Preset: "last_30_days"}, Text: "refund"},
		"30d-text-common":  {TimeRange: &reportingv1.TimeRange{Preset: "last_30_days"}, Text: "order"},
		"30d-text-words":   {TimeRange: &reportingv1.TimeRange{Preset: "last_30_days"}, Text: "Where is my order?"},
		"all-time-visitor": {TimeRange: &reportingv1.TimeRange{Preset: "all_time"}, VisitorToken: "visitor-1"},
		"all-time-flags":   {TimeRange: &reportingv1.TimeRange{Preset: "all_time"}, TakenOver: yes, HasLead: yes},
		"all-time-dropped": {TimeRange: &reportingv1.TimeRange{Preset: "all_time"}, FlowId: "checkout", DroppedOff: true},
	}
	names := make([]string, 0, len(lists))
	for k := range lists {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		fl := lists[name]
		b.Run("ListConversations/"+name, func(b *testing.B) {
			latency(b, func() error {
				_, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: fl, PageSize: 50})
				return err
			})
		})
	}
	b.Run("GetVisitor/visitor-1", func(b *testing.B) {
		latency(b, func() error {
			_, err := f.client.GetVisitor(f.ctx(), &reportingv1.GetVisitorRequest{VisitorToken: "visitor-1"})
			return err
		})
	})
	for _, name := range []string{"last-7-days", "all-time", "30d-combined"} {
		fl := lists[name]
		b.Run("GetDashboard/"+name, func(b *testing.B) {
			latency(b, func() error {
				_, err := f.client.GetDashboard(f.ctx(), &reportingv1.GetDashboardRequest{Filter: fl})
				return err
			})
		})
	}
}

// latency runs call b.N times and reports p50 and p95 in milliseconds.
func latency(b *testing.B, call func() error) {
	ds := make([]time.Duration, 0, b.N)
	for range b.N {
		st := time.Now()
		if err := call(); err != nil {
			b.Fatal(err)
		}
		ds = append(ds, time.Since(st))
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	pct := func(p float64) float64 { return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
}
