package notification_test

import (
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/evtest"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	"github.com/parley-dev/parley/services/notification"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// fastAlerts evaluates every 100ms with one-second buckets.
func fastAlerts(c *notification.Config) {
	c.AlertStep, c.AlertInterval = time.Second, 100*time.Millisecond
}

func (f *fixture) alertSubscriber() *receiver {
	rcv := newReceiver(f.t, 0)
	sub, err := f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{
		Target: rcv.srv.URL, Alerts: true, EventKinds: []string{"lead_captured"}}})
	if err != nil {
		f.t.Fatal(err)
	}
	rcv.setSecret(sub.Secret)
	return rcv
}

func (f *fixture) alertRule(r *notificationv1.AlertRule) *notificationv1.AlertRule {
	f.t.Helper()
	out, err := f.client.CreateAlertRule(f.ctx(), &notificationv1.CreateAlertRuleRequest{Rule: r})
	if err != nil {
		f.t.Fatal(err)
	}
	return out
}

// now stamps events as recorded now (alert windows count by recorded_at;
// evtest's events are from the past).
func now(envs ...*eventv1.Envelope) []*eventv1.Envelope {
	for _, e := range envs {
		e.RecordedAt, e.OccurredAt = timestamppb.Now(), timestamppb.Now()
	}
	return envs
}

// alertTypes lists the received notifications' types in order.
func alertTypes(r *receiver) []string {
	_, _, bodies, _ := r.snapshot()
	var out []string
	for _, b := range bodies {
		out = append(out, b["type"].(string))
	}
	return out
}

func TestAlertFiresOnceAndResolves(t *testing.T) {
	f := start(t, fastAlerts)
	rcv := f.alertSubscriber()
	f.alertRule(&notificationv1.AlertRule{Name: "visitors piling up", EventKind: "message_posted", Condition: `event.role == "visitor"`,
		WindowSeconds: 3, Threshold: 3})
	cv := evtest.New("acme", "a1")
	// Three visitor messages (and a bot message the condition leaves out)
	// within the window.
	f.publish(now(cv.Started("support"), cv.Visitor("one"), cv.Bot("hm", 100), cv.Visitor("two"), cv.Visitor("three"))...)
	f.waitFor("firing", func() bool { return len(alertTypes(rcv)) >= 1 })
	_, _, bodies, bad := rcv.snapshot()
	alert := bodies[0]["data"].(map[string]any)["alert"].(map[string]any)
	if bodies[0]["type"] != "alert.firing" || alert["count"] != "3" || alert["state"] != "firing" || len(bad) != 0 {
		t.Fatalf("notification %v (bad signatures %v)", bodies[0], bad)
	}
	// The window slides past the messages: resolved, once.
	f.waitFor("resolved", func() bool { return len(alertTypes(rcv)) >= 2 })
	time.Sleep(500 * time.Millisecond)
	if got := alertTypes(rcv); len(got) != 2 || got[1] != "alert.resolved" {
		t.Fatalf("notifications %v, want one firing then one resolved", got)
	}
}

func TestBelowAlertFiresWhenNothingHappens(t *testing.T) {
	f := start(t, fastAlerts)
	rcv := f.alertSubscriber()
	f.alertRule(&notificationv1.AlertRule{Name: "no conversations", EventKind: "conversation_started", Condition: `conversation.bot_id == "support"`,
		WindowSeconds: 2, Threshold: 1, Comparison: "below"})
	time.Sleep(time.Second)
	if got := alertTypes(rcv); len(got) != 0 {
		t.Fatalf("fired before a whole window passed: %v", got)
	}
	f.waitFor("firing", func() bool { return len(alertTypes(rcv)) == 1 })
	f.publish(now(evtest.New("acme", "b1").Started("support"))...)
	f.waitFor("resolved", func() bool { return len(alertTypes(rcv)) == 2 })
	if got := alertTypes(rcv); got[0] != "alert.firing" || got[1] != "alert.resolved" {
		t.Fatalf("notifications %v", got)
	}
}

func TestBadAlertRulesAreInvalidArgument(t *testing.T) {
	f := start(t)
	for field, r := range map[string]*notificationv1.AlertRule{
		"rule.event_kind":     {EventKind: "nope", WindowSeconds: 60, Threshold: 1},
		"rule.window_seconds": {EventKind: "issue_detected", WindowSeconds: 90, Threshold: 1},
		"rule.threshold":      {EventKind: "issue_detected", WindowSeconds: 60},
		"rule.comparison":     {EventKind: "issue_detected", WindowSeconds: 60, Threshold: 1, Comparison: "sideways"},
		"rule.condition":      {EventKind: "issue_detected", WindowSeconds: 60, Threshold: 1, Condition: "event.nope"},
	} {
		_, err := f.client.CreateAlertRule(f.ctx(), &notificationv1.CreateAlertRuleRequest{Rule: r})
		assertInvalid(t, err, field)
	}
}
