package reporting_test

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
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
	nowUS := time.Now().UnixMicro()
	if err := ch.Exec(ctx, fmt.Sprintf(`INSERT INTO conversations (tenant_id, conversation_id, started_at, started_at_us, last_activity_at, status, end_reason,
			bot_id, channel, platform, type, visitor_name, country, city, message_count, visitor_messages, bot_messages, tags, goals, leads, taken_over,
			flows_started, flow_drops, cost_micros, engagement, version)
		SELECT 'acme', concat('bench-', toString(number)), toDateTime(intDiv(ts, 1000000)), ts, toDateTime(intDiv(ts, 1000000) + 300),
			if(number %% 3 = 0, 'active', 'ended'), if(number %% 3 = 0, '', 'visitor_closed'),
			concat('bot-', toString(number %% 5)), ['web_widget', 'whatsapp', 'telegram', 'api'][number %% 4 + 1], ['desktop', 'mobile_web', 'app'][number %% 3 + 1],
			if(number %% 10 = 0, 'test', 'live'), concat('Visitor ', toString(number)), ['DE', 'FR', 'US', 'GB', 'BR'][number %% 5 + 1], 'City',
			toUInt32(number %% 12 + 1), toUInt32(number %% 6), toUInt32(number %% 6 + 1),
			if(number %% 7 = 0, ['unidentified-response'], emptyArrayString()), if(number %% 11 = 0, ['purchase'], emptyArrayString()),
			toUInt32(number %% 13 = 0), toUInt8(number %% 17 = 0),
			if(number %% 2 = 0, ['checkout'], emptyArrayString()), if(number %% 8 = 0, ['checkout/pay/n2'], emptyArrayString()),
			toInt64(number %% 1000), ['no_reply', 'engaged', 'completed', 'goal_completed'][number %% 4 + 1], number + 1
		FROM (SELECT number, %d - toInt64(number) * 5184000 AS ts FROM system.numbers LIMIT %d)`, nowUS, n)); err != nil {
		b.Fatal(err)
	}
	if err := ch.Exec(ctx, fmt.Sprintf(`INSERT INTO messages (tenant_id, conversation_id, event_id, role, text, occurred_at, occurred_at_us, stream_seq)
		SELECT 'acme', concat('bench-', toString(number)), toString(number), 'visitor',
			if(number %% 1000 = 0, 'I want a refund', 'where is my order'), toDateTime(intDiv(%d - toInt64(number) * 5184000, 1000000)), %d - toInt64(number) * 5184000, number + 1
		FROM system.numbers LIMIT %d`, nowUS, nowUS, n)); err != nil {
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
