package notification_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/evtest"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// rule reads one alert rule as ListAlertRules shows it.
func (f *fixture) rule(id string) *notificationv1.AlertRule {
	f.t.Helper()
	res, err := f.client.ListAlertRules(f.ctx(), &notificationv1.ListAlertRulesRequest{})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, r := range res.GetRules() {
		if r.GetAlertId() == id {
			return r
		}
	}
	f.t.Fatalf("no alert rule %s", id)
	return nil
}

// evaluated waits until the rule's last evaluation saw count matching
// events and value, and checks that nothing was notified yet.
func (f *fixture) evaluated(rcv *receiver, id string, count uint64, value float64, notified int) {
	f.t.Helper()
	f.waitFor(fmt.Sprintf("count %d value %v", count, value), func() bool {
		r := f.rule(id)
		return r.GetCount() == count && math.Abs(r.GetValue()-value) < 1e-9
	})
	time.Sleep(300 * time.Millisecond) // a few more evaluations
	if got := alertTypes(rcv); len(got) != notified {
		f.t.Fatalf("notifications %v, want %d", got, notified)
	}
}

// firedAlerts are the received notifications' (type, alert_id).
func firedAlerts(r *receiver) [][2]string {
	_, _, bodies, _ := r.snapshot()
	var out [][2]string
	for _, b := range bodies {
		a := b["data"].(map[string]any)["alert"].(map[string]any)
		out = append(out, [2]string{b["type"].(string), a["alert_id"].(string)})
	}
	return out
}

// botRate counts bot messages and unidentified ones among envs: what an
// unidentified_rate rule should see.
func botRate(envs []*eventv1.Envelope) (bots, unidentified int) {
	for _, e := range envs {
		if m := e.GetMessagePosted(); m != nil && m.GetRole() == eventv1.Role_ROLE_BOT {
			bots++
			if m.GetUnidentified() {
				unidentified++
			}
		}
	}
	return bots, unidentified
}

func TestUnidentifiedRateAlert(t *testing.T) {
	f := start(t, fastAlerts)
	rcv := f.alertSubscriber()
	r := f.alertRule(&notificationv1.AlertRule{Name: "bot lost", Metric: "unidentified_rate", WindowSeconds: 60,
		RateThreshold: 0.5, MinMessages: 4})
	if r.GetEventKind() != "message_posted" || r.GetComparison() != "above" {
		t.Fatalf("rule %v", r)
	}
	cv := evtest.New("acme", "u1")
	var sent []*eventv1.Envelope
	step := func(envs ...*eventv1.Envelope) (uint64, float64) {
		sent = append(sent, now(envs...)...)
		f.publish(envs...)
		bots, unid := botRate(sent)
		return uint64(bots), float64(unid) / float64(bots)
	}
	// Two fallbacks: a rate of 1, but fewer bot messages than min_messages.
	// A visitor message marked unidentified is no bot answer.
	n, rate := step(cv.Started("support"), cv.Visitor("hi"), cv.Fallback("sorry?"), cv.Fallback("pardon?"),
		cv.Event(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "?!", Unidentified: true}))
	f.evaluated(rcv, r.GetAlertId(), n, rate, 0)
	// Three answers understood: 2 of 5, below the threshold.
	n, rate = step(cv.Bot("a", 10), cv.Bot("b", 10), cv.Bot("c", 10))
	if rate >= 0.5 {
		t.Fatalf("test data: rate %v", rate)
	}
	f.evaluated(rcv, r.GetAlertId(), n, rate, 0)
	// One more fallback: 3 of 6 reaches it.
	n, rate = step(cv.Fallback("again?"))
	if rate < 0.5 {
		t.Fatalf("test data: rate %v", rate)
	}
	f.waitFor("firing", func() bool { return len(alertTypes(rcv)) == 1 })
	if got := f.rule(r.GetAlertId()); got.GetState() != "firing" || got.GetCount() != n || math.Abs(got.GetValue()-rate) > 1e-9 {
		t.Fatalf("rule %v, want firing with %d bot messages and rate %v", got, n, rate)
	}
	if got := firedAlerts(rcv); got[0] != [2]string{"alert.firing", r.GetAlertId()} {
		t.Fatalf("notifications %v", got)
	}
}

func TestIssueKindAndOperatorNoResponseAlerts(t *testing.T) {
	f := start(t, fastAlerts)
	rcv := f.alertSubscriber()
	issues := f.alertRule(&notificationv1.AlertRule{Name: "bot errors", EventKind: "issue_detected", IssueKind: "bot-error",
		WindowSeconds: 60, Threshold: 2})
	waits := f.alertRule(&notificationv1.AlertRule{Name: "no operator", EventKind: "operator_no_response", WindowSeconds: 60, Threshold: 1})
	cv := evtest.New("acme", "i1")
	issue := func(kind string) *eventv1.Envelope {
		e := cv.Event(&eventv1.TagApplied{Tag: "x"}) // tagging's envelope; evtest has no IssueDetected
		e.Payload = &eventv1.Envelope_IssueDetected{IssueDetected: &eventv1.IssueDetected{Issue: kind, Detector: "builtin"}}
		e.Kind = eventbus.Kind(e)
		return e
	}
	// One bot error and two other issues: below 2 bot errors.
	f.publish(now(cv.Started("support"), issue("bot-error"), issue("long-wait"), issue("long-wait"))...)
	f.evaluated(rcv, issues.GetAlertId(), 1, 1, 0)
	f.publish(now(issue("bot-error"), cv.Event(&eventv1.OperatorNoResponse{WaitedSeconds: 120}))...)
	f.waitFor("both firing", func() bool { return len(alertTypes(rcv)) == 2 })
	got := map[[2]string]bool{}
	for _, a := range firedAlerts(rcv) {
		got[a] = true
	}
	if !got[[2]string{"alert.firing", issues.GetAlertId()}] || !got[[2]string{"alert.firing", waits.GetAlertId()}] {
		t.Fatalf("notifications %v", firedAlerts(rcv))
	}
	if r := f.rule(issues.GetAlertId()); r.GetCount() != 2 {
		t.Fatalf("issue rule %v, want count 2", r)
	}
}

// localDayZone picks a fixed-offset zone where one minute before local
// midnight is another local day than now but the same UTC day, so a cost
// summed over the UTC day (or a sliding 24h) would differ from the local
// day's.
func localDayZone(t *testing.T, at time.Time) (*time.Location, time.Time) {
	for off := -12; off <= 14; off++ {
		name := fmt.Sprintf("Etc/GMT%+d", -off) // POSIX sign: Etc/GMT+1 is UTC-1
		if off == 0 {
			name = "UTC"
		}
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Fatal(err)
		}
		l := at.In(loc)
		before := time.Date(l.Year(), l.Month(), l.Day(), 0, 0, 0, 0, loc).Add(-time.Minute)
		if before.UTC().YearDay() == at.UTC().YearDay() && at.Sub(before) > 2*time.Minute {
			return loc, before
		}
	}
	t.Skip("no zone separates the local and UTC days at this minute")
	return nil, time.Time{}
}

func TestCostPerDayAlert(t *testing.T) {
	f := start(t, fastAlerts)
	rcv := f.alertSubscriber()
	loc, yesterday := localDayZone(t, time.Now())
	setTimeZone(t, f, "acme", loc.String())
	r := f.alertRule(&notificationv1.AlertRule{Name: "budget", Metric: "cost_per_day", Currency: "USD", BudgetMicros: 1_000_000})
	if r.GetEventKind() != "usage_recorded" || r.GetWindowSeconds() != 0 {
		t.Fatalf("rule %v", r)
	}
	cv := evtest.New("acme", "c1")
	type usage struct {
		at       time.Time
		currency string
		micros   int64
	}
	var sent []usage
	// today's USD cost in the tenant's zone, summed here from what was sent.
	today := func() (n uint64, micros int64) {
		y, m, d := time.Now().In(loc).Date()
		for _, u := range sent {
			uy, um, ud := u.at.In(loc).Date()
			cur := u.currency
			if cur == "" {
				cur = "USD"
			}
			if cur == "USD" && uy == y && um == m && ud == d {
				n, micros = n+1, micros+u.micros
			}
		}
		return n, micros
	}
	send := func(us ...usage) {
		for _, u := range us {
			e := cv.Event(&eventv1.UsageRecorded{Model: "m", CostMicros: u.micros, Currency: u.currency})
			e.RecordedAt, e.OccurredAt = timestamppb.New(u.at), timestamppb.New(u.at)
			f.publish(e)
			sent = append(sent, u)
		}
	}
	// Yesterday's (local) spend, EUR never added to USD, and today's USD
	// below the budget: 0.8 of 1.
	send(usage{yesterday, "USD", 600_000}, usage{time.Now(), "EUR", 900_000}, usage{time.Now(), "", 500_000},
		usage{time.Now(), "USD", 300_000})
	n, micros := today()
	if micros >= 1_000_000 {
		t.Fatalf("test data: %d micros today", micros)
	}
	f.evaluated(rcv, r.GetAlertId(), n, float64(micros), 0)
	// Today's USD passes the budget.
	send(usage{time.Now(), "USD", 250_000})
	n, micros = today()
	f.waitFor("firing", func() bool { return len(alertTypes(rcv)) == 1 })
	if got := f.rule(r.GetAlertId()); got.GetState() != "firing" || got.GetCount() != n || got.GetValue() != float64(micros) {
		t.Fatalf("rule %v, want firing with %d records and %d micros", got, n, micros)
	}
}

func TestBadMetricAlertRulesAreInvalidArgument(t *testing.T) {
	f := start(t)
	for field, r := range map[string]*notificationv1.AlertRule{
		"rule.metric":         {Metric: "latency", EventKind: "issue_detected", WindowSeconds: 60, Threshold: 1},
		"rule.issue_kind":     {EventKind: "message_posted", IssueKind: "bot-error", WindowSeconds: 60, Threshold: 1},
		"rule.rate_threshold": {Metric: "unidentified_rate", WindowSeconds: 60, RateThreshold: 1.5},
		"rule.min_messages":   {Metric: "unidentified_rate", WindowSeconds: 60, RateThreshold: 0.5, MinMessages: 2_000_000},
		"rule.event_kind":     {Metric: "unidentified_rate", EventKind: "usage_recorded", WindowSeconds: 60, RateThreshold: 0.5},
		"rule.currency":       {Metric: "cost_per_day", Currency: "usd", BudgetMicros: 1},
		"rule.budget_micros":  {Metric: "cost_per_day", Currency: "USD"},
		"rule.window_seconds": {Metric: "cost_per_day", Currency: "USD", BudgetMicros: 1, WindowSeconds: 3600},
		"rule.comparison":     {Metric: "cost_per_day", Currency: "USD", BudgetMicros: 1, Comparison: "below"},
	} {
		_, err := f.client.CreateAlertRule(f.ctx(), &notificationv1.CreateAlertRuleRequest{Rule: r})
		assertInvalid(t, err, field)
	}
	if res, err := f.client.ListAlertRules(f.ctx(), &notificationv1.ListAlertRulesRequest{}); err != nil || len(res.GetRules()) != 0 {
		t.Fatalf("rules after bad requests: %v, %v", res, err)
	}
}

// setTimeZone sets a tenant's time zone as SettingsService does.
func setTimeZone(t *testing.T, f *fixture, tenant, zone string) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), f.cfg.Postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if tag, err := conn.Exec(context.Background(), `UPDATE tenants SET time_zone = $2 WHERE tenant_id = $1`, tenant, zone); err != nil ||
		tag.RowsAffected() != 1 || strings.TrimSpace(zone) == "" {
		t.Fatalf("set time zone: %v %v", tag, err)
	}
}
