package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// Claimed is a due delivery with what sending it needs of its subscription.
type Claimed struct {
	Delivery
	Target, Secret, PreviousSecret string
	PreviousExpiresAt              *time.Time
	// Transcript: the subscription wants transcripts with conversation_ended emails.
	Transcript bool
}

// Claim takes due deliveries of active subscriptions: at most perSub of
// each subscription not in busy, those accept keeps. Each one taken is
// hidden from every replica's Claim for claimFor (the attempt's bound): a
// replica that dies mid-attempt leaves it to be retried after that.
func (s *Store) Claim(ctx context.Context, busy []string, perSub int, claimFor time.Duration, accept func(*Claimed) bool) ([]*Claimed, error) {
	var out []*Claimed
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lazyCommit(ctx, tx); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT d.tenant_id, d.delivery_id, d.subscription_id, d.kind, d.event_id, d.event_kind,
			d.conversation_id, d.stream_seq, d.payload, d.recipients, d.state, d.attempts, d.last_status, d.last_error,
			d.next_attempt_at, d.expires_at, d.created_at, d.delivered_at,
			s.target, s.secret, s.previous_secret, s.previous_expires_at, s.transcript
			FROM notification_subscriptions s, LATERAL (
				SELECT * FROM notification_deliveries d WHERE d.subscription_id = s.subscription_id AND d.state = 'pending'
				AND d.next_attempt_at <= now() ORDER BY d.next_attempt_at LIMIT $2 FOR UPDATE OF d SKIP LOCKED) d
			WHERE s.state = 'active' AND NOT (s.subscription_id = ANY($1))`, nonNil(busy), perSub)
		if err != nil {
			return err
		}
		var all []*Claimed
		for rows.Next() {
			c := &Claimed{}
			d, err := scanDelivery(rows, &c.Target, &c.Secret, &c.PreviousSecret, &c.PreviousExpiresAt, &c.Transcript)
			if err != nil {
				rows.Close()
				return err
			}
			c.Delivery = *d
			all = append(all, c)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		var tenants, ids []string
		for _, c := range all {
			if accept(c) {
				out = append(out, c)
				tenants, ids = append(tenants, c.TenantID), append(ids, c.ID)
			}
		}
		if len(ids) == 0 {
			return nil
		}
		_, err = tx.Exec(ctx, `UPDATE notification_deliveries d SET next_attempt_at = now() + $3::interval
			FROM unnest($1::text[], $2::text[]) AS k(t, i) WHERE d.tenant_id = k.t AND d.delivery_id = k.i`,
			tenants, ids, claimFor)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Outcome is the result of one attempt.
type Outcome struct {
	At        time.Time
	Status    int
	Latency   time.Duration
	Error     string
	Success   bool
	NextRetry time.Time
	// Gone disables the subscription at once (410 Gone).
	Gone bool
	// Permanent fails the delivery now (an email recipient refused with
	// 5xx): no retry, and the subscription's failure period is untouched.
	Permanent bool
}

// Recorded tells what Record did to the subscription.
type Recorded struct {
	// Disabled is set when this attempt disabled the subscription, with
	// the reason.
	Disabled       bool
	DisabledReason string
	OwnerEmail     string
}

// Record stores an attempt and its effect: the delivery delivered, retried
// at o.NextRetry or failed once past its expiry; the subscription's failure
// period started or ended, or the subscription disabled (o.Gone, or failing
// for longer than disableAfter).
func (s *Store) Record(ctx context.Context, c *Claimed, o Outcome, disableAfter time.Duration) (Recorded, error) {
	var r Recorded
	const insertAttempt = `INSERT INTO notification_attempts (tenant_id, delivery_id, subscription_id, attempted_at,
			status_code, latency_ms, error, success) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)`
	if o.Success {
		// The common case: its statements in one round trip between BEGIN and COMMIT.
		return r, pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			b := &pgx.Batch{}
			b.Queue(`SET LOCAL synchronous_commit = off`) // see lazyCommit
			b.Queue(insertAttempt, c.TenantID, c.ID, c.SubscriptionID, o.At, o.Status, int(o.Latency.Milliseconds()), o.Error, o.Success)
			b.Queue(`UPDATE notification_deliveries SET state = 'delivered', attempts = attempts + 1,
				last_status = $3, last_error = '', delivered_at = $4 WHERE tenant_id = $1 AND delivery_id = $2`,
				c.TenantID, c.ID, o.Status, o.At)
			b.Queue(`UPDATE notification_subscriptions SET failing_since = NULL
				WHERE tenant_id = $1 AND subscription_id = $2 AND failing_since IS NOT NULL`, c.TenantID, c.SubscriptionID)
			return tx.SendBatch(ctx, b).Close()
		})
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lazyCommit(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, insertAttempt,
			c.TenantID, c.ID, c.SubscriptionID, o.At, o.Status, int(o.Latency.Milliseconds()), o.Error, o.Success); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE notification_deliveries SET attempts = attempts + 1, last_status = $3, last_error = $4,
			next_attempt_at = $5, state = CASE WHEN $6 OR $5 > expires_at THEN 'failed' ELSE 'pending' END
			WHERE tenant_id = $1 AND delivery_id = $2 AND state = 'pending'`,
			c.TenantID, c.ID, o.Status, o.Error, o.NextRetry, o.Permanent); err != nil {
			return err
		}
		if o.Permanent {
			return nil // the recipient's fault, not the endpoint's
		}
		var since time.Time
		var state string
		if err := tx.QueryRow(ctx, `UPDATE notification_subscriptions SET failing_since = COALESCE(failing_since, $3)
			WHERE tenant_id = $1 AND subscription_id = $2 RETURNING failing_since, state, owner_email`,
			c.TenantID, c.SubscriptionID, o.At).Scan(&since, &state, &r.OwnerEmail); err != nil {
			if err == pgx.ErrNoRows {
				return nil // deleted meanwhile
			}
			return err
		}
		switch {
		case state != StateActive:
			return nil
		case o.Gone:
			r.DisabledReason = "the endpoint answered 410 Gone"
		case o.At.Sub(since) >= disableAfter:
			r.DisabledReason = "every attempt failed since " + since.UTC().Format(time.RFC3339) + " (last: " + o.Error + ")"
		default:
			return nil
		}
		r.Disabled = true
		_, err := tx.Exec(ctx, `UPDATE notification_subscriptions SET state = 'disabled', disabled_reason = $3, disabled_at = $4,
			updated_at = $4 WHERE tenant_id = $1 AND subscription_id = $2`, c.TenantID, c.SubscriptionID, r.DisabledReason, o.At)
		return err
	})
	return r, err
}

// lazyCommit lets tx commit without waiting for its WAL flush. For claims
// and attempt records only: a crash can forget the last ones (at most
// PostgreSQL's wal_writer_delay × 3), which sends those deliveries again
// with the same webhook-id (at-least-once, as documented); the deliveries
// themselves are written with the consumer's position, durably.
func lazyCommit(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`)
	return err
}
