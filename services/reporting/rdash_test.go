package reporting_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testsvc"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// dconv is the dashboard test's model of one conversation.
type dconv struct {
	id                    string
	started               time.Time
	old, ended, lead      bool
	country, region       string
	flow, cart, pay, done bool
	dropCart, dropPay     bool
}

func dashModel(now time.Time) []dconv {
	var out []dconv
	for i := range 24 {
		c := dconv{id: fmt.Sprintf("d%02d", i), old: i%3 == 0, ended: i%2 == 1, lead: i%5 == 0,
			country: []string{"DE", "DE", "US"}[i%3], region: []string{"BE", "BY", "MA"}[(i/3)%3],
			flow: i%4 != 3, cart: i%4 == 0 || i%4 == 1, pay: i%4 == 0, done: i%8 == 0}
		c.dropCart = i%4 == 1
		c.dropPay = c.pay && !c.done
		if c.old {
			c.started = now.Add(-72*time.Hour + time.Duration(i)*time.Minute)
		} else {
			c.started = now.Add(-3*time.Hour + time.Duration(i)*time.Minute)
		}
		c.started = c.started.Truncate(time.Millisecond)
		out = append(out, c)
	}
	return out
}

func (c dconv) events() []*eventv1.Envelope {
	at := c.started
	var out []*eventv1.Envelope
	add := func(e *eventv1.Envelope) {
		e.EventId, e.TenantId, e.ConversationId, e.OccurredAt, e.Producer = eventbus.NewEventID(), "acme", c.id, timestamppb.New(at), "ingest"
		out = append(out, e)
		at = at.Add(time.Second)
	}
	add(&eventv1.Envelope{Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{
		BotId: "shop", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET, Location: &eventv1.Location{Country: c.country, Region: c.region, City: "X"}}}})
	if c.flow {
		add(&eventv1.Envelope{Payload: &eventv1.Envelope_FlowStarted{FlowStarted: &eventv1.FlowStarted{FlowId: "checkout"}}})
	}
	if c.cart {
		add(&eventv1.Envelope{Payload: &eventv1.Envelope_FlowStep{FlowStep: &eventv1.FlowStep{FlowId: "checkout", StepId: "cart", NodeId: "n-cart"}}})
	}
	if c.pay {
		add(&eventv1.Envelope{Payload: &eventv1.Envelope_FlowStep{FlowStep: &eventv1.FlowStep{FlowId: "checkout", StepId: "pay", NodeId: "n-pay"}}})
	}
	if c.dropCart {
		add(&eventv1.Envelope{Payload: &eventv1.Envelope_FlowDropped{FlowDropped: &eventv1.FlowDropped{FlowId: "checkout", StepId: "cart", NodeId: "n-cart"}}})
	}
	if c.dropPay {
		add(&eventv1.Envelope{Payload: &eventv1.Envelope_FlowDropped{FlowDropped: &eventv1.FlowDropped{FlowId: "checkout", StepId: "pay", NodeId: "n-pay"}}})
	}
	if c.done {
		add(&eventv1.Envelope{Payload: &eventv1.Envelope_FlowCompleted{FlowCompleted: &eventv1.FlowCompleted{FlowId: "checkout"}}})
	}
	if c.lead {
		add(&eventv1.Envelope{Payload: &eventv1.Envelope_LeadCaptured{LeadCaptured: &eventv1.LeadCaptured{Email: "l@example.com"}}})
	}
	if c.ended {
		add(&eventv1.Envelope{Producer: "lifecycle", Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_VISITOR_CLOSED}}})
	}
	return out
}

// publishEnvs publishes envelopes and returns the last stream sequence.
func (f *fixture) publishEnvs(t *testing.T, es []*eventv1.Envelope) uint64 {
	t.Helper()
	var last uint64
	for _, e := range es {
		ack, err := f.bus.Publish(context.Background(), e)
		if err != nil {
			t.Fatal(err)
		}
		last = ack.Sequence
	}
	return last
}

// TestDashboardMapFunnelAndActiveNow checks the dashboard's regions, lead
// count, "active now" (conversations started before the range that are
// still active included) and flow funnel against the test's own model.
func TestDashboardMapFunnelAndActiveNow(t *testing.T) {
	f := startEmpty(t)
	model := dashModel(f.now)
	var all []*eventv1.Envelope
	for _, c := range model {
		all = append(all, c.events()...)
	}
	seq := f.publishEnvs(t, all)
	d, err := f.client.GetDashboard(f.ctx(), &reportingv1.GetDashboardRequest{
		Filter: &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "last_24_hours"}}, MinSequence: seq})
	if err != nil {
		t.Fatal(err)
	}
	var total, activeInRange, activeNow, leads, started, completed uint64
	regions := map[string]uint64{}
	steps := map[string]uint64{}
	type drop struct {
		n   uint64
		ids []dconv
	}
	drops := map[string]*drop{"cart/n-cart": {}, "pay/n-pay": {}}
	for _, c := range model {
		if !c.ended {
			activeNow++
		}
		if c.old {
			continue
		}
		total++
		if !c.ended {
			activeInRange++
		}
		if c.lead {
			leads++
		}
		regions[c.country+"/"+c.region]++
		if c.flow {
			started++
		}
		if c.done {
			completed++
		}
		if c.cart {
			steps["cart"]++
		}
		if c.pay {
			steps["pay"]++
		}
		if c.dropCart {
			drops["cart/n-cart"].n++
			drops["cart/n-cart"].ids = append(drops["cart/n-cart"].ids, c)
		}
		if c.dropPay {
			drops["pay/n-pay"].n++
			drops["pay/n-pay"].ids = append(drops["pay/n-pay"].ids, c)
		}
	}
	if d.Total != total || d.Active != activeInRange || d.ActiveNow != activeNow || d.Leads != leads || d.LeadConversionRate != float64(leads)/float64(total) {
		t.Fatalf("dashboard total %d active %d active_now %d leads %d rate %v; want %d %d %d %d", d.Total, d.Active, d.ActiveNow, d.Leads, d.LeadConversionRate, total, activeInRange, activeNow, leads)
	}
	if activeNow <= activeInRange {
		t.Fatal("the model must have active conversations started before the range")
	}
	got := map[string]uint64{}
	for _, r := range d.Regions {
		got[r.Key] = r.Count
	}
	if fmt.Sprint(got) != fmt.Sprint(regions) {
		t.Fatalf("regions %v want %v", got, regions)
	}
	if len(d.Funnels) != 1 {
		t.Fatalf("funnels %v", d.Funnels)
	}
	fu := d.Funnels[0]
	if fu.FlowId != "checkout" || fu.Started != started || fu.Completed != completed {
		t.Fatalf("funnel %v want started %d completed %d", fu, started, completed)
	}
	gotSteps := map[string]uint64{}
	for _, s := range fu.Steps {
		gotSteps[s.Key] = s.Count
	}
	if fmt.Sprint(gotSteps) != fmt.Sprint(steps) {
		t.Fatalf("steps %v want %v", gotSteps, steps)
	}
	if len(fu.Drops) != len(drops) {
		t.Fatalf("drops %v", fu.Drops)
	}
	for _, dr := range fu.Drops {
		want := drops[dr.StepId+"/"+dr.NodeId]
		if want == nil || dr.Conversations != want.n {
			t.Fatalf("drop %v want %+v", dr, want)
		}
		sort.Slice(want.ids, func(i, j int) bool { return want.ids[i].started.After(want.ids[j].started) })
		var ids []string
		for _, c := range want.ids[:min(5, len(want.ids))] {
			ids = append(ids, c.id)
		}
		if !slices.Equal(dr.SampleConversationIds, ids) {
			t.Fatalf("drop %s/%s samples %v want %v", dr.StepId, dr.NodeId, dr.SampleConversationIds, ids)
		}
	}
	if d.Freshness.GetAppliedSequence() < seq || d.Freshness.GetLastSequence() < seq {
		t.Fatalf("freshness %v, want applied >= %d", d.Freshness, seq)
	}
}

// TestSettingsAPI sets a tenant's time zone and bot names through the
// SettingsService (admin scope), reads them back (read scope) over gRPC and
// HTTP, and refuses bad values naming the field, changing nothing.
func TestSettingsAPI(t *testing.T) {
	f := startEmpty(t)
	sc := reportingv1.NewSettingsServiceClient(testDial(t, f))
	admin := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", f.adminKey)
	// A read-only key cannot change settings.
	if _, err := sc.UpdateSettings(f.ctx(), &reportingv1.UpdateSettingsRequest{TimeZone: proto.String("Europe/Berlin")}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("read key updates: %v", err)
	}
	got, err := sc.UpdateSettings(admin, &reportingv1.UpdateSettingsRequest{TimeZone: proto.String("Asia/Tokyo"),
		Bots: []*reportingv1.Bot{{BotId: "shop", Name: "Shop assistant"}, {BotId: "support", Name: "Helpdesk"}}})
	if err != nil {
		t.Fatal(err)
	}
	want := &reportingv1.TenantSettings{TimeZone: "Asia/Tokyo", Bots: []*reportingv1.Bot{{BotId: "shop", Name: "Shop assistant"}, {BotId: "support", Name: "Helpdesk"}}}
	if !proto.Equal(got, want) {
		t.Fatalf("settings %v want %v", got, want)
	}
	// Rename one bot; the time zone stays.
	if _, err := sc.UpdateSettings(admin, &reportingv1.UpdateSettingsRequest{Bots: []*reportingv1.Bot{{BotId: "shop", Name: "Shop"}}}); err != nil {
		t.Fatal(err)
	}
	want.Bots[0].Name = "Shop"
	for _, c := range []struct {
		req   *reportingv1.UpdateSettingsRequest
		field string
	}{
		{&reportingv1.UpdateSettingsRequest{TimeZone: proto.String("Mars/Olympus")}, "time_zone"},
		{&reportingv1.UpdateSettingsRequest{TimeZone: proto.String("Local")}, "time_zone"},
		{&reportingv1.UpdateSettingsRequest{TimeZone: proto.String("")}, "time_zone"},
		{&reportingv1.UpdateSettingsRequest{TimeZone: proto.String("UTC"), Bots: []*reportingv1.Bot{{BotId: "x", Name: "ok"}, {BotId: "shop", Name: strings.Repeat("n", 101)}}}, "bots[1].name"},
		{&reportingv1.UpdateSettingsRequest{Bots: []*reportingv1.Bot{{BotId: "", Name: "x"}}}, "bots[0].bot_id"},
		{&reportingv1.UpdateSettingsRequest{Bots: []*reportingv1.Bot{{BotId: "a\x00", Name: "x"}}}, "bots[0].bot_id"},
	} {
		_, err := sc.UpdateSettings(admin, c.req)
		if status.Code(err) != codes.InvalidArgument || badField(err) != c.field {
			t.Fatalf("%v: %v (field %q) want InvalidArgument on %s", c.req, err, badField(err), c.field)
		}
	}
	// Read with the read scope: nothing of the refused requests changed.
	// The admin key is tenant "ops"; the read key "acme" sees its own.
	acme := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", f.key)
	if s, err := sc.GetSettings(acme, &reportingv1.GetSettingsRequest{}); err != nil || s.TimeZone != "UTC" || len(s.Bots) != 0 {
		t.Fatalf("acme settings %v %v", s, err)
	}
	opsRead := testsvcKey(t, f, "ops", grpcx.ScopeRead)
	if s, err := sc.GetSettings(metadata.AppendToOutgoingContext(context.Background(), "x-api-key", opsRead), &reportingv1.GetSettingsRequest{}); err != nil || !proto.Equal(s, want) {
		t.Fatalf("ops settings %v %v want %v", s, err, want)
	}
	// HTTP/JSON.
	code, body := f.httpCall(t, http.MethodGet, "/v1/settings", opsRead)
	if code != 200 || !strings.Contains(string(body), `"time_zone":"Asia/Tokyo"`) || !strings.Contains(string(body), `"Helpdesk"`) {
		t.Fatalf("GET /v1/settings: %d %s", code, body)
	}
}

// TestReportsUseSettingsAndNewColumns checks the sessions report's page,
// takeover time and agent, console link and times in the tenant's or the
// requested zone; bot names from the registry; billing per bot and
// currency; normalised popular phrases.
func TestReportsUseSettingsAndNewColumns(t *testing.T) {
	const console = "https://console.example/app"
	f := startEmptyWith(t, func(c *reporting.Config) { c.ConsoleBaseURL = console })
	// The acme tenant's settings, through the API, with an admin key of acme.
	adminKey := testsvcKey(t, f, "acme", grpcx.ScopeAdmin)
	sc := reportingv1.NewSettingsServiceClient(testDial(t, f))
	admin := metadata.AppendToOutgoingContext(context.Background(), "x-api-key", adminKey)
	if _, err := sc.UpdateSettings(admin, &reportingv1.UpdateSettingsRequest{TimeZone: proto.String("America/New_York"),
		Bots: []*reportingv1.Bot{{BotId: "shop", Name: "Shop assistant"}}}); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC) // 07:00 in New York, 13:00 in Berlin
	type bill struct {
		bot, currency string
		cost          int64
	}
	convs := []struct {
		id, bot, page, currency string
		cost                    int64
		takeover                bool
		texts                   []string
	}{
		{"r1", "shop", "https://shop.example/a", "EUR", 100, true, []string{"Refund?!", "hello"}},
		{"r2", "shop", "https://shop.example/b", "USD", 250, false, []string{"  refund  ", "Hello,   World"}},
		{"r3", "support", "", "EUR", 40, false, []string{"REFUND", "hello world!"}},
		{"r4", "shop", "", "EUR", 7, false, nil},
	}
	var es []*eventv1.Envelope
	billing := map[string]*[2]int64{} // bot|currency -> conversations, cost
	for i, c := range convs {
		at := base.Add(time.Duration(i) * time.Minute)
		add := func(p *eventv1.Envelope) {
			p.EventId, p.TenantId, p.ConversationId, p.OccurredAt, p.Producer = eventbus.NewEventID(), "acme", c.id, timestamppb.New(at), "ingest"
			es = append(es, p)
			at = at.Add(time.Second)
		}
		add(&eventv1.Envelope{Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{BotId: c.bot, Channel: eventv1.Channel_CHANNEL_WEB_WIDGET, PageUrl: c.page}}})
		for _, tx := range c.texts {
			add(&eventv1.Envelope{Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: tx}}})
		}
		if c.takeover {
			add(&eventv1.Envelope{Payload: &eventv1.Envelope_AgentJoined{AgentJoined: &eventv1.AgentJoined{AgentId: "ann", AgentName: "Ann"}}})
		}
		add(&eventv1.Envelope{Payload: &eventv1.Envelope_UsageRecorded{UsageRecorded: &eventv1.UsageRecorded{CostMicros: c.cost, Currency: c.currency}}})
		k := c.bot + "|" + c.currency
		if billing[k] == nil {
			billing[k] = &[2]int64{}
		}
		billing[k][0]++
		billing[k][1] += c.cost
	}
	seq := f.publishEnvs(t, es)
	run := func(kind, tz string) *reportingv1.Report {
		t.Helper()
		r, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: kind, Filter: allTime(&reportingv1.Filter{}), TimeZone: tz, MinSequence: seq})
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if r.Freshness.GetAppliedSequence() < seq {
			t.Fatalf("%s freshness %v", kind, r.Freshness)
		}
		return r
	}
	col := func(r *reportingv1.Report, name string) int {
		t.Helper()
		i := slices.Index(r.Columns, name)
		if i < 0 {
			t.Fatalf("no column %s in %v", name, r.Columns)
		}
		return i
	}
	rowOf := func(r *reportingv1.Report, key string, cols ...string) []string {
		t.Helper()
		for _, row := range r.Rows {
			var k []string
			for _, c := range cols {
				k = append(k, row.Values[col(r, c)])
			}
			if strings.Join(k, "|") == key {
				return row.Values
			}
		}
		t.Fatalf("no row %s in %v", key, r.Rows)
		return nil
	}
	fmtIn := func(tm time.Time, zone string) string {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		return tm.In(loc).Format(time.DateTime)
	}
	// Sessions in the tenant's zone (New York), then in a requested one.
	for _, zone := range []string{"", "Europe/Berlin"} {
		want := zone
		if want == "" {
			want = "America/New_York"
		}
		r := run("sessions", zone)
		if len(r.Rows) != len(convs) {
			t.Fatalf("sessions rows %d", len(r.Rows))
		}
		row := rowOf(r, "r1", "conversation_id")
		takeoverAt := base.Add(3 * time.Second) // started, two messages, then the agent joined
		if row[col(r, "started_at")] != fmtIn(base, want) || row[col(r, "page")] != "https://shop.example/a" ||
			row[col(r, "takeover_at")] != fmtIn(takeoverAt, want) || row[col(r, "takeover_agent")] != "ann" ||
			row[col(r, "link")] != console+"/conversations/r1" || row[col(r, "bot")] != "Shop assistant" || row[col(r, "bot_id")] != "shop" ||
			row[col(r, "currency")] != "EUR" {
			t.Fatalf("sessions (%s) r1: %v", want, row)
		}
		row = rowOf(r, "r3", "conversation_id")
		if row[col(r, "bot")] != "support" || row[col(r, "takeover_at")] != "" || row[col(r, "takeover_agent")] != "" {
			t.Fatalf("sessions r3 (no registry name, no takeover): %v", row)
		}
	}
	// Billing: one row per bot and currency, amounts never added across currencies.
	r := run("billing", "")
	if len(r.Rows) != len(billing) {
		t.Fatalf("billing rows %v want %v", r.Rows, billing)
	}
	for k, b := range billing {
		row := rowOf(r, k, "bot_id", "currency")
		if row[col(r, "conversations")] != fmt.Sprint(b[0]) || row[col(r, "cost_micros")] != fmt.Sprint(b[1]) {
			t.Fatalf("billing %s: %v want %v", k, row, b)
		}
		if strings.HasPrefix(k, "shop|") && row[col(r, "bot")] != "Shop assistant" {
			t.Fatalf("billing bot name: %v", row)
		}
	}
	// Popular phrases: case, punctuation and white space normalised.
	want := map[string][2]int{}
	for _, c := range convs {
		seen := map[string]bool{}
		for _, tx := range c.texts {
			p := normalise(tx)
			w := want[p]
			w[0]++
			if !seen[p] {
				w[1]++
				seen[p] = true
			}
			want[p] = w
		}
	}
	r = run("popular_phrases", "")
	if len(r.Rows) != len(want) {
		t.Fatalf("phrases %v want %v", r.Rows, want)
	}
	for _, row := range r.Rows {
		w := want[row.Values[0]]
		if row.Values[1] != fmt.Sprint(w[0]) || row.Values[2] != fmt.Sprint(w[1]) {
			t.Fatalf("phrase %v want %v", row.Values, w)
		}
	}
	// A bad requested zone names the field.
	_, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: "sessions", TimeZone: "Nowhere/Land"})
	if status.Code(err) != codes.InvalidArgument || badField(err) != "time_zone" {
		t.Fatalf("bad zone: %v", err)
	}
}

// normalise is the test's own phrase normalisation: lower case, every
// non-letter/digit/space rune a space, runs of spaces one, trimmed.
func normalise(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if strings.ContainsRune("?!.,;:'\"-()", r) {
			r = ' '
		}
		b.WriteRune(r)
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// TestMinSequenceReadsOwnWrites: a list with an append's sequence as
// min_sequence sees that write at once; while the projector is stalled it
// waits at most the configured bound, then answers Unavailable; a sequence
// beyond the log's end is InvalidArgument.
func TestMinSequenceReadsOwnWrites(t *testing.T) {
	stall := make(chan struct{})
	f := startEmptyWith(t, func(c *reporting.Config) {
		c.FreshnessMaxWait = 1500 * time.Millisecond
		c.Wrap = func(h partition.Handler) partition.Handler {
			return func(ctx context.Context, b partition.Batch) error {
				for _, d := range b.Deliveries {
					if d.Envelope.GetConversationId() == "stalled" {
						select {
						case <-stall:
						case <-ctx.Done():
							return ctx.Err()
						}
					}
				}
				return h(ctx, b)
			}
		}
	})
	for i := range 5 {
		seq := f.publishEnvs(t, f.convEvents(fmt.Sprintf("own-%d", i)))
		res, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{
			Filter: allTime(&reportingv1.Filter{}), MinSequence: seq, PageSize: 10})
		if err != nil {
			t.Fatal(err)
		}
		if res.TotalCount != uint64(i+1) || res.Conversations[0].ConversationId != fmt.Sprintf("own-%d", i) {
			t.Fatalf("write %d not visible: total %d", i, res.TotalCount)
		}
		if fr := res.Freshness; fr.GetAppliedSequence() < seq || fr.GetLag() != fr.GetLastSequence()-fr.GetAppliedSequence() {
			t.Fatalf("freshness %v after seq %d", fr, seq)
		}
	}
	last, err := f.bus.LastSequence(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{MinSequence: last + 1000})
	if status.Code(err) != codes.InvalidArgument || badField(err) != "min_sequence" {
		t.Fatalf("future sequence: %v", err)
	}
	// Stall the projector: the wait is bounded.
	seq := f.publishEnvs(t, f.convEvents("stalled"))
	began := time.Now()
	_, err = f.client.GetDashboard(f.ctx(), &reportingv1.GetDashboardRequest{MinSequence: seq})
	if status.Code(err) != codes.Unavailable || time.Since(began) < 1400*time.Millisecond || time.Since(began) > 5*time.Second {
		t.Fatalf("stalled: %v after %s", err, time.Since(began))
	}
	// Without min_sequence the answer comes at once and shows the lag.
	d, err := f.client.GetDashboard(f.ctx(), &reportingv1.GetDashboardRequest{})
	if err != nil || d.Freshness.GetAppliedSequence() >= seq || d.Freshness.GetLag() == 0 {
		t.Fatalf("stalled dashboard freshness %v %v", d.GetFreshness(), err)
	}
	close(stall)
	rep, err := f.client.RunReport(f.ctx(), &reportingv1.RunReportRequest{Kind: "sessions", Filter: allTime(&reportingv1.Filter{}), MinSequence: seq})
	if err != nil || len(rep.Rows) != 6 || rep.Freshness.GetAppliedSequence() < seq {
		t.Fatalf("after the stall: %v rows, %v, %v", len(rep.GetRows()), rep.GetFreshness(), err)
	}
}

func (f *fixture) convEvents(id string) []*eventv1.Envelope {
	at := time.Now().Add(-time.Minute)
	return []*eventv1.Envelope{
		{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: id, OccurredAt: timestamppb.New(at), Producer: "ingest",
			Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{BotId: "b", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET}}},
		{EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: id, OccurredAt: timestamppb.New(at.Add(time.Second)), Producer: "ingest",
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "hi"}}},
	}
}

// testDial connects to the fixture's gRPC server.
func testDial(t *testing.T, f *fixture) *grpc.ClientConn { return testsvc.Dial(t, f.cfg.GRPCAddr) }

// testsvcKey creates one more API key of an existing tenant.
func testsvcKey(t *testing.T, f *fixture, tenant string, scopes ...string) string {
	t.Helper()
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: f.pgURL, MaxConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	key, _, err := tenancy.NewStore(pool).CreateAPIKey(ctx, tenant, "test-"+strings.Join(scopes, "-"), scopes)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestQueriesAnswerWithoutTheLog: with NATS down a list still answers from
// ClickHouse, without freshness; a call that asks to wait for a sequence is
// Unavailable with no driver text.
func TestQueriesAnswerWithoutTheLog(t *testing.T) {
	f := startEmpty(t)
	seq := f.publishEnvs(t, f.convEvents("before-outage"))
	res, err := f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: allTime(&reportingv1.Filter{}), MinSequence: seq})
	if err != nil || res.TotalCount != 1 || res.Freshness == nil {
		t.Fatalf("before the outage: %v %v", res, err)
	}
	f.nats.Shutdown()
	// Back up before the cleanups, which drain connections to it.
	defer f.nats.Restart()
	res, err = f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: allTime(&reportingv1.Filter{})})
	if err != nil || res.TotalCount != 1 || res.Freshness != nil {
		t.Fatalf("NATS down, no min_sequence: %v %v", res, err)
	}
	_, err = f.client.ListConversations(f.ctx(), &reportingv1.ListConversationsRequest{Filter: allTime(&reportingv1.Filter{}), MinSequence: seq})
	if status.Code(err) != codes.Unavailable || strings.Contains(strings.ToLower(status.Convert(err).Message()), "nats") {
		t.Fatalf("NATS down, min_sequence: %v", err)
	}
}
