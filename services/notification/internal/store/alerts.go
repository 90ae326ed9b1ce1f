package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Alert states, comparisons and metrics.
const (
	AlertOK     = "ok"
	AlertFiring = "firing"
	Above       = "above"
	Below       = "below"

	MetricCount            = "count"
	MetricUnidentifiedRate = "unidentified_rate"
	MetricCostPerDay       = "cost_per_day"
)

// AlertRule is one row of notification_alert_rules.
type AlertRule struct {
	TenantID, ID, Name, EventKind, Condition string
	Window                                   time.Duration
	Threshold                                int64
	Comparison, State                        string
	Count, Transitions                       int64
	ChangedAt                                *time.Time
	CreatedAt                                time.Time
	// Metric is MetricCount, MetricUnidentifiedRate or MetricCostPerDay.
	Metric string
	// IssueKind narrows an issue_detected count to one issue.
	IssueKind string
	// RateThreshold and MinMessages judge MetricUnidentifiedRate.
	RateThreshold float64
	MinMessages   int64
	// Currency and BudgetMicros judge MetricCostPerDay.
	Currency     string
	BudgetMicros int64
	// Value is the measure at the last evaluation (count, rate or micros).
	Value float64
}

const ruleColumns = `tenant_id, alert_id, name, event_kind, condition, window_seconds, threshold, comparison, state, count,
	transitions, changed_at, created_at, metric, issue_kind, rate_threshold, min_messages, currency, budget_micros, value`

func scanRule(r pgx.Row, extra ...any) (*AlertRule, error) {
	var a AlertRule
	var secs int
	err := r.Scan(append([]any{&a.TenantID, &a.ID, &a.Name, &a.EventKind, &a.Condition, &secs, &a.Threshold, &a.Comparison, &a.State,
		&a.Count, &a.Transitions, &a.ChangedAt, &a.CreatedAt, &a.Metric, &a.IssueKind, &a.RateThreshold, &a.MinMessages, &a.Currency,
		&a.BudgetMicros, &a.Value}, extra...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	a.Window = time.Duration(secs) * time.Second
	return &a, err
}

func collectRules(rows pgx.Rows, err error) ([]*AlertRule, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*AlertRule
	for rows.Next() {
		a, err := scanRule(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// CreateAlertRule inserts a rule.
func (s *Store) CreateAlertRule(ctx context.Context, a *AlertRule) (*AlertRule, error) {
	return scanRule(s.pool.QueryRow(ctx, `INSERT INTO notification_alert_rules (tenant_id, alert_id, name, event_kind, condition,
		window_seconds, threshold, comparison, metric, issue_kind, rate_threshold, min_messages, currency, budget_micros)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) RETURNING `+ruleColumns,
		a.TenantID, a.ID, a.Name, a.EventKind, a.Condition, int(a.Window/time.Second), a.Threshold, a.Comparison, a.Metric, a.IssueKind,
		a.RateThreshold, a.MinMessages, a.Currency, a.BudgetMicros))
}

// AlertRules lists a tenant's rules.
func (s *Store) AlertRules(ctx context.Context, tenant string) ([]*AlertRule, error) {
	return collectRules(s.pool.Query(ctx, `SELECT `+ruleColumns+` FROM notification_alert_rules WHERE tenant_id = $1 ORDER BY created_at, alert_id`, tenant))
}

// TenantsAlertRules lists the rules of the tenants, in tx.
func TenantsAlertRules(ctx context.Context, tx pgx.Tx, tenants []string) ([]*AlertRule, error) {
	return collectRules(tx.Query(ctx, `SELECT `+ruleColumns+` FROM notification_alert_rules WHERE tenant_id = ANY($1)`, tenants))
}

// DeleteAlertRule removes a rule and its counts.
func (s *Store) DeleteAlertRule(ctx context.Context, tenant, id string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM notification_alert_rules WHERE tenant_id = $1 AND alert_id = $2`, tenant, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		_, err = tx.Exec(ctx, `DELETE FROM notification_alert_counts WHERE alert_id = $1`, id)
		return err
	})
}

// CountKey is one rule's time bucket.
type CountKey struct {
	AlertID string
	Bucket  time.Time
}

// Amount is what a bucket adds up: matching events and, per metric,
// unidentified bot answers or cost in micros.
type Amount struct {
	Count, Value int64
}

// AddCounts adds matching events to their buckets, in tx.
func AddCounts(ctx context.Context, tx pgx.Tx, counts map[CountKey]Amount) error {
	if len(counts) == 0 {
		return nil
	}
	var ids []string
	var buckets []time.Time
	var ns, vs []int64
	for k, n := range counts {
		ids, buckets, ns, vs = append(ids, k.AlertID), append(buckets, k.Bucket), append(ns, n.Count), append(vs, n.Value)
	}
	_, err := tx.Exec(ctx, `INSERT INTO notification_alert_counts (alert_id, bucket, count, value)
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[])
		ON CONFLICT (alert_id, bucket) DO UPDATE SET count = notification_alert_counts.count + EXCLUDED.count,
			value = notification_alert_counts.value + EXCLUDED.value`, ids, buckets, ns, vs)
	return err
}

// windowStart is where a rule's window begins at $1: the tenant's local
// midnight for cost_per_day (tenants.time_zone, UTC when unset), else now
// minus the window (buckets after it count).
const windowStart = `CASE WHEN r.metric = 'cost_per_day' THEN
		(date_trunc('day', $1::timestamptz AT TIME ZONE tz.tzname) AT TIME ZONE tz.tzname) - interval '1 microsecond'
		ELSE $1::timestamptz - make_interval(secs => r.window_seconds) END`

// judge decides whether a rule fires with n matching events and value v in
// its window, and sets its Count and Value.
func judge(a *AlertRule, n, v int64, now time.Time) bool {
	a.Count, a.Value = n, float64(n)
	switch a.Metric {
	case MetricUnidentifiedRate:
		a.Value = 0
		if n == 0 {
			return false
		}
		a.Value = float64(v) / float64(n)
		return n >= max(a.MinMessages, 1) && a.Value >= a.RateThreshold
	case MetricCostPerDay:
		a.Value = float64(v)
		return v >= a.BudgetMicros
	}
	if a.Comparison == Below {
		return n < a.Threshold && now.Sub(a.CreatedAt) >= a.Window
	}
	return n >= a.Threshold
}

// Transition is a rule that changed state at an evaluation.
type Transition struct {
	Rule *AlertRule
	Subs []*Subscription
}

// EvaluateAlerts counts each rule's window (the buckets after now -
// window), decides whether it fires (see AlertRule's comparison), and for
// each rule that changed state records it and calls deliver with the rule
// and the tenant's active subscriptions with alerts set, in the same
// transaction. Rules another replica is evaluating are skipped.
func (s *Store) EvaluateAlerts(ctx context.Context, now time.Time, deliver func(pgx.Tx, Transition) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+ruleColumns+`, w.n, w.v
			FROM notification_alert_rules r
			CROSS JOIN LATERAL (SELECT COALESCE((SELECT nullif(t.time_zone, '') FROM tenants t WHERE t.tenant_id = r.tenant_id), 'UTC') AS tzname) tz
			CROSS JOIN LATERAL (SELECT COALESCE(sum(c.count), 0)::bigint AS n, COALESCE(sum(c.value), 0)::bigint AS v
				FROM notification_alert_counts c WHERE c.alert_id = r.alert_id AND c.bucket > `+windowStart+`) w
			FOR UPDATE OF r SKIP LOCKED`, now)
		if err != nil {
			return err
		}
		var changed []*AlertRule
		var all []*AlertRule
		for rows.Next() {
			var n, v int64
			a, err := scanRule(rows, &n, &v)
			if err != nil {
				rows.Close()
				return err
			}
			firing := judge(a, n, v, now)
			if firing != (a.State == AlertFiring) {
				a.State, a.Transitions = AlertOK, a.Transitions+1
				if firing {
					a.State = AlertFiring
				}
				a.ChangedAt = &now
				changed = append(changed, a)
			}
			all = append(all, a)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, a := range all {
			if _, err := tx.Exec(ctx, `UPDATE notification_alert_rules SET state = $2, count = $3, transitions = $4, changed_at = $5, value = $6
				WHERE alert_id = $1`, a.ID, a.State, a.Count, a.Transitions, a.ChangedAt, a.Value); err != nil {
				return err
			}
		}
		for _, a := range changed {
			subs, err := collectSubs(tx.Query(ctx, `SELECT `+subColumns+` FROM notification_subscriptions
				WHERE tenant_id = $1 AND alerts AND state = 'active'`, a.TenantID))
			if err != nil {
				return err
			}
			if err := deliver(tx, Transition{Rule: a, Subs: subs}); err != nil {
				return err
			}
		}
		// Buckets no window reaches any more.
		_, err = tx.Exec(ctx, `DELETE FROM notification_alert_counts c USING notification_alert_rules r
			WHERE c.alert_id = r.alert_id AND c.bucket < $1::timestamptz - make_interval(secs => r.window_seconds) - interval '1 minute'`, now)
		return err
	})
}
