package reporting_test

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
)

// costConv is a conversation of the cost model: its bot and usage records
// in order.
type costConv struct {
	id, bot string
	usage   []*eventv1.UsageRecorded
}

func costModel() []costConv {
	u := func(model, cur string, cost int64, in, out uint64, paid uint32) *eventv1.UsageRecorded {
		return &eventv1.UsageRecorded{Model: model, Currency: cur, CostMicros: cost, InputTokens: in, OutputTokens: out, PaidMessages: paid}
	}
	return []costConv{
		{"k1", "shop", []*eventv1.UsageRecorded{u("gpt", "USD", 1000, 10, 5, 1), u("claude", "EUR", 300, 4, 2, 2), u("gpt", "USD", 500, 1, 1, 0)}},
		{"k2", "shop", nil},
		{"k3", "support", []*eventv1.UsageRecorded{u("claude", "EUR", 700, 7, 3, 1)}},
		{"k4", "shop", []*eventv1.UsageRecorded{u("mini", "", 200, 2, 2, 0)}},
		{"k5", "shop", []*eventv1.UsageRecorded{u("claude", "EUR", 50, 1, 0, 4), u("gpt", "USD", 60, 0, 1, 0)}},
	}
}

// TestCostsPerCurrency checks that the dashboard and the billing report
// keep the costs of conversations with usage in several currencies, per
// currency, against sums computed from the test's own usage records.
func TestCostsPerCurrency(t *testing.T) {
	f := startEmpty(t)
	convs := costModel()
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	var es []*eventv1.Envelope
	for i, c := range convs {
		at := base.Add(time.Duration(i) * time.Minute)
		add := func(e *eventv1.Envelope) {
			e.EventId, e.TenantId, e.ConversationId, e.OccurredAt, e.Producer = eventbus.NewEventID(), "acme", c.id, timestamppb.New(at), "ingest"
			es = append(es, e)
			at = at.Add(time.Second)
		}
		add(&eventv1.Envelope{Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{BotId: c.bot, Channel: eventv1.Channel_CHANNEL_WEB_WIDGET}}})
		for _, u := range c.usage {
			add(&eventv1.Envelope{Payload: &eventv1.Envelope_UsageRecorded{UsageRecorded: u}})
		}
	}
	seq := f.publishEnvs(t, es)

	// The model: per currency (usage without one is USD), and per bot and
	// currency for billing; paid messages once per conversation, in its
	// first usage's currency; conversations without usage in "".
	type bill struct {
		convs               map[string]bool
		paid, cost, in, out int64
	}
	perCur := map[string]*bill{}
	billing := map[string]*bill{}
	get := func(m map[string]*bill, k string) *bill {
		if m[k] == nil {
			m[k] = &bill{convs: map[string]bool{}}
		}
		return m[k]
	}
	for _, c := range convs {
		if len(c.usage) == 0 {
			get(billing, c.bot+"|").convs[c.id] = true
			continue
		}
		var paid int64
		for _, u := range c.usage {
			paid += int64(u.PaidMessages)
		}
		for i, u := range c.usage {
			cur := u.Currency
			if cur == "" {
				cur = "USD"
			}
			for _, b := range []*bill{get(perCur, cur), get(billing, c.bot+"|"+cur)} {
				b.convs[c.id] = true
				b.cost += u.CostMicros
				b.in += int64(u.InputTokens)
				b.out += int64(u.OutputTokens)
			}
			if i == 0 {
				get(billing, c.bot+"|"+cur).paid += paid
			}
		}
	}

	d, err := f.client.GetDashboard(f.ctx(), &reportingv1.GetDashboardRequest{Filter: allTime(&reportingv1.Filter{}), MinSequence: seq})
	if err != nil {
		t.Fatal(err)
	}
	curs := slices.Sorted(maps.Keys(perCur))
	if len(d.Costs) != len(curs) {
		t.Fatalf("dashboard costs %v, want %d currencies", d.Costs, len(curs))
	}
	for i, cur := range curs {
		got, want := d.Costs[i], perCur[cur]
		if got.Currency != cur || got.CostMicros != want.cost || got.Conversations != uint64(len(want.convs)) {
			t.Fatalf("dashboard cost %d: %v, want %s %+v", i, got, cur, want)
		}
	}
	if d.CostMicros != 0 {
		t.Fatalf("cost_micros %d over several currencies, want 0", d.CostMicros)
	}
	// One currency: cost_micros is its total.
	d, err = f.client.GetDashboard(f.ctx(), &reportingv1.GetDashboardRequest{Filter: allTime(&reportingv1.Filter{BotIds: []string{"support"}})})
	if err != nil {
		t.Fatal(err)
	}
	if want := billing["support|EUR"].cost; d.CostMicros != want || len(d.Costs) != 1 || d.Costs[0].Currency != "EUR" {
		t.Fatalf("support dashboard cost %d %v, want %d EUR", d.CostMicros, d.Costs, want)
	}

	r, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: "billing", Filter: allTime(&reportingv1.Filter{})})
	if err != nil {
		t.Fatal(err)
	}
	col := func(name string) int {
		i := slices.Index(r.Columns, name)
		if i < 0 {
			t.Fatalf("no column %s in %v", name, r.Columns)
		}
		return i
	}
	if len(r.Rows) != len(billing) {
		t.Fatalf("billing rows %v, want %d", r.Rows, len(billing))
	}
	for _, row := range r.Rows {
		v := row.Values
		key := v[col("bot_id")] + "|" + v[col("currency")]
		b := billing[key]
		if b == nil {
			t.Fatalf("billing row %v not in the model", v)
		}
		want := []string{strconv.Itoa(len(b.convs)), strconv.FormatInt(b.paid, 10), strconv.FormatInt(b.cost, 10), strconv.FormatInt(b.in, 10), strconv.FormatInt(b.out, 10)}
		got := []string{v[col("conversations")], v[col("paid_messages")], v[col("cost_micros")], v[col("input_tokens")], v[col("output_tokens")]}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("billing %s: %v, want %v", key, got, want)
		}
	}
}
