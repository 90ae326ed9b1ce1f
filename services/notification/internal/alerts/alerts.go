// Package alerts evaluates the tenants' alert rules: every interval it
// counts each rule's sliding window (buckets the consumer fills with the
// matching events, exactly once) and delivers a notification, through the
// subscriptions with alerts set, each time a rule starts or stops firing.
package alerts

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	"github.com/parley-dev/parley/services/notification/internal/consumer"
	"github.com/parley-dev/parley/services/notification/internal/store"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Evaluator runs the evaluations.
type Evaluator struct {
	Store    *store.Store
	Every    time.Duration
	RetryFor time.Duration
	Kick     func()
	Log      *slog.Logger
}

// Run evaluates every e.Every until ctx ends.
func (e *Evaluator) Run(ctx context.Context) error {
	t := time.NewTicker(e.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := e.Evaluate(ctx, time.Now()); err != nil && ctx.Err() == nil {
			e.Log.WarnContext(ctx, "evaluating alert rules failed; retrying", "err", err)
		}
	}
}

// Evaluate evaluates every rule once at now.
func (e *Evaluator) Evaluate(ctx context.Context, now time.Time) error {
	sent := 0
	err := e.Store.EvaluateAlerts(ctx, now, func(tx pgx.Tx, t store.Transition) error {
		kind := "alert.resolved"
		if t.Rule.State == store.AlertFiring {
			kind = "alert.firing"
		}
		rule, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ToProto(t.Rule))
		if err != nil {
			return err
		}
		body, err := json.Marshal(map[string]any{"type": kind, "timestamp": now.UTC().Format(time.RFC3339Nano),
			"data": map[string]json.RawMessage{"alert": rule}})
		if err != nil {
			return err
		}
		// One delivery per subscription and transition: evaluated again
		// (another replica, a retry), it is not sent twice.
		event := "alert/" + t.Rule.ID + "/" + strconv.FormatInt(t.Rule.Transitions, 10)
		var ds []store.Delivery
		for _, s := range t.Subs {
			ds = append(ds, store.Delivery{TenantID: s.TenantID, ID: consumer.DeliveryID(s.TenantID, s.ID, event), SubscriptionID: s.ID,
				Kind: s.Kind, EventID: event, EventKind: kind, Payload: body, Recipients: s.Emails, ExpiresAt: now.Add(e.RetryFor)})
		}
		n, err := store.Enqueue(ctx, tx, ds, false)
		sent += n
		return err
	})
	if err == nil && sent > 0 && e.Kick != nil {
		e.Kick()
	}
	return err
}

// ToProto is a rule as the API shows it.
func ToProto(a *store.AlertRule) *notificationv1.AlertRule {
	out := &notificationv1.AlertRule{AlertId: a.ID, Name: a.Name, EventKind: a.EventKind, Condition: a.Condition,
		WindowSeconds: uint32(a.Window / time.Second), Threshold: uint64(a.Threshold), Comparison: a.Comparison, State: a.State,
		Count: uint64(a.Count), CreatedAt: timestamppb.New(a.CreatedAt), Metric: a.Metric, IssueKind: a.IssueKind,
		RateThreshold: a.RateThreshold, MinMessages: uint32(a.MinMessages), Currency: a.Currency, BudgetMicros: a.BudgetMicros, Value: a.Value}
	if a.Metric == store.MetricCostPerDay {
		out.WindowSeconds = 0 // the tenant's calendar day
	}
	if a.ChangedAt != nil {
		out.ChangedAt = timestamppb.New(*a.ChangedAt)
	}
	return out
}
