// Package store keeps notification's state in PostgreSQL: subscriptions,
// each conversation's facts, deliveries (one row per subscription and
// event, written with the consumer's position) and every attempt.
package store

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/pgstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// VersionTable records which of notification's migrations were applied.
const VersionTable = "goose_notification"

// Migrate applies notification's migrations.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return pgstore.Migrate(ctx, pool, sub, VersionTable, log)
}

// Errors callers map to gRPC codes.
var (
	ErrNotFound = errors.New("store: not found")
	// ErrTooMany is CreateSubscription's answer when the tenant has the
	// most subscriptions allowed.
	ErrTooMany = errors.New("store: the tenant has the most subscriptions allowed")
)

// Subscription states.
const (
	StateActive   = "active"
	StatePaused   = "paused"
	StateDisabled = "disabled"
)

// Delivery states.
const (
	Pending   = "pending"
	Delivered = "delivered"
	Failed    = "failed"
)

// Subscription is one row of notification_subscriptions.
type Subscription struct {
	TenantID, ID, Name, Kind, Target string
	Emails, EventKinds               []string
	Condition, OwnerEmail, State     string
	Secret, PreviousSecret           string
	PreviousExpiresAt                *time.Time
	DisabledReason                   string
	DisabledAt, FailingSince         *time.Time
	CreatedAt, UpdatedAt             time.Time
	// Alerts: the tenant's alert notifications go to it too.
	Alerts bool
	// Transcript: its conversation_ended emails carry the transcript.
	Transcript bool
}

// Store reads and writes notification's tables.
type Store struct{ pool *pgxpool.Pool }

// New returns a store on pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Pool is the store's database.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

const subColumns = `tenant_id, subscription_id, name, kind, target, emails, event_kinds, condition, owner_email, state,
	secret, previous_secret, previous_expires_at, disabled_reason, disabled_at, failing_since, created_at, updated_at, alerts, transcript`

func scanSub(r pgx.Row) (*Subscription, error) {
	var s Subscription
	err := r.Scan(&s.TenantID, &s.ID, &s.Name, &s.Kind, &s.Target, &s.Emails, &s.EventKinds, &s.Condition, &s.OwnerEmail, &s.State,
		&s.Secret, &s.PreviousSecret, &s.PreviousExpiresAt, &s.DisabledReason, &s.DisabledAt, &s.FailingSince, &s.CreatedAt, &s.UpdatedAt, &s.Alerts, &s.Transcript)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return &s, err
}

func collectSubs(rows pgx.Rows, err error) ([]*Subscription, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Subscription
	for rows.Next() {
		s, err := scanSub(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// CreateSubscription inserts s unless the tenant already has limit
// subscriptions (ErrTooMany; limit 0: no limit). Creations of one tenant
// are serialized (an advisory lock) so the limit holds under concurrency.
func (s *Store) CreateSubscription(ctx context.Context, sub *Subscription, limit int) (*Subscription, error) {
	var out *Subscription
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('notification_subscriptions/' || $1, 0))`, sub.TenantID); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM notification_subscriptions WHERE tenant_id = $1 AND event_kinds <> '{transcript}'`,
			sub.TenantID).Scan(&n); err != nil {
			return err
		}
		if limit > 0 && n >= limit {
			return ErrTooMany
		}
		var err error
		out, err = scanSub(tx.QueryRow(ctx, `INSERT INTO notification_subscriptions
			(tenant_id, subscription_id, name, kind, target, emails, event_kinds, condition, owner_email, secret, alerts, transcript)
			VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) RETURNING `+subColumns,
			sub.TenantID, sub.ID, sub.Name, sub.Kind, sub.Target, nonNil(sub.Emails), nonNil(sub.EventKinds), sub.Condition, sub.OwnerEmail, sub.Secret,
			sub.Alerts, sub.Transcript))
		return err
	})
	return out, err
}

// Prune deletes deliveries delivered or failed before before, and attempts
// made before it.
func (s *Store) Prune(ctx context.Context, before time.Time) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM notification_deliveries WHERE state <> 'pending' AND created_at < $1`, before); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `DELETE FROM notification_attempts WHERE attempted_at < $1`, before)
	return err
}

// UpdateSubscription replaces the settings of an existing subscription.
func (s *Store) UpdateSubscription(ctx context.Context, sub *Subscription) (*Subscription, error) {
	return scanSub(s.pool.QueryRow(ctx, `UPDATE notification_subscriptions SET name = $3, target = $4, emails = $5,
		event_kinds = $6, condition = $7, owner_email = $8, alerts = $9, transcript = $10, updated_at = now()
		WHERE tenant_id = $1 AND subscription_id = $2 RETURNING `+subColumns,
		sub.TenantID, sub.ID, sub.Name, sub.Target, nonNil(sub.Emails), nonNil(sub.EventKinds), sub.Condition, sub.OwnerEmail, sub.Alerts,
		sub.Transcript))
}

// SetState pauses or resumes a subscription; resuming clears a disabled
// subscription's reason and failure period.
func (s *Store) SetState(ctx context.Context, tenant, id, state string) (*Subscription, error) {
	return scanSub(s.pool.QueryRow(ctx, `UPDATE notification_subscriptions SET state = $3, updated_at = now(),
		disabled_reason = CASE WHEN $3 = 'active' THEN '' ELSE disabled_reason END,
		disabled_at = CASE WHEN $3 = 'active' THEN NULL ELSE disabled_at END,
		failing_since = CASE WHEN $3 = 'active' THEN NULL ELSE failing_since END
		WHERE tenant_id = $1 AND subscription_id = $2 RETURNING `+subColumns, tenant, id, state))
}

// RotateSecret makes secret the signing secret; the current one keeps
// signing until previousUntil.
func (s *Store) RotateSecret(ctx context.Context, tenant, id, secret string, previousUntil time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE notification_subscriptions SET previous_secret = secret, previous_expires_at = $4,
		secret = $3, updated_at = now() WHERE tenant_id = $1 AND subscription_id = $2 AND kind = 'webhook'`, tenant, id, secret, previousUntil)
	if err == nil && tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return err
}

// Subscription reads one subscription.
func (s *Store) Subscription(ctx context.Context, tenant, id string) (*Subscription, error) {
	return scanSub(s.pool.QueryRow(ctx, `SELECT `+subColumns+` FROM notification_subscriptions WHERE tenant_id = $1 AND subscription_id = $2`, tenant, id))
}

// Subscriptions lists a tenant's subscriptions, oldest first.
func (s *Store) Subscriptions(ctx context.Context, tenant string) ([]*Subscription, error) {
	return collectSubs(s.pool.Query(ctx, `SELECT `+subColumns+` FROM notification_subscriptions WHERE tenant_id = $1 ORDER BY created_at, subscription_id`, tenant))
}

// ActiveSubscriptions lists the active subscriptions of the tenants, in tx.
func ActiveSubscriptions(ctx context.Context, tx pgx.Tx, tenants []string) ([]*Subscription, error) {
	return collectSubs(tx.Query(ctx, `SELECT `+subColumns+` FROM notification_subscriptions WHERE tenant_id = ANY($1) AND state = 'active'
		ORDER BY created_at, subscription_id`, tenants))
}

// DeleteSubscription removes a subscription with its deliveries and attempts.
func (s *Store) DeleteSubscription(ctx context.Context, tenant, id string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM notification_subscriptions WHERE tenant_id = $1 AND subscription_id = $2`, tenant, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		if _, err := tx.Exec(ctx, `DELETE FROM notification_deliveries WHERE tenant_id = $1 AND subscription_id = $2`, tenant, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM notification_attempts WHERE tenant_id = $1 AND subscription_id = $2`, tenant, id)
		return err
	})
}

// ConvKey names a conversation.
type ConvKey struct{ Tenant, Conversation string }

// LoadFacts reads the stored facts of the conversations, in tx.
func LoadFacts(ctx context.Context, tx pgx.Tx, keys []ConvKey) (map[ConvKey][]byte, error) {
	tenants, convs := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		tenants[i], convs[i] = k.Tenant, k.Conversation
	}
	rows, err := tx.Query(ctx, `SELECT c.tenant_id, c.conversation_id, c.facts FROM notification_conversations c
		JOIN unnest($1::text[], $2::text[]) AS k(t, c) ON c.tenant_id = k.t AND c.conversation_id = k.c`, tenants, convs)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[ConvKey][]byte{}
	for rows.Next() {
		var k ConvKey
		var b []byte
		if err := rows.Scan(&k.Tenant, &k.Conversation, &b); err != nil {
			return nil, err
		}
		out[k] = b
	}
	return out, rows.Err()
}

// SaveFacts upserts conversations' facts, in tx.
func SaveFacts(ctx context.Context, tx pgx.Tx, facts map[ConvKey][]byte) error {
	if len(facts) == 0 {
		return nil
	}
	tenants, convs, blobs := make([]string, 0, len(facts)), make([]string, 0, len(facts)), make([][]byte, 0, len(facts))
	for k, b := range facts {
		tenants, convs, blobs = append(tenants, k.Tenant), append(convs, k.Conversation), append(blobs, b)
	}
	_, err := tx.Exec(ctx, `INSERT INTO notification_conversations (tenant_id, conversation_id, facts)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
		ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET facts = EXCLUDED.facts`, tenants, convs, blobs)
	return err
}

// Delivery is one row of notification_deliveries.
type Delivery struct {
	TenantID, ID, SubscriptionID, Kind string
	EventID, EventKind, Conversation   string
	StreamSeq                          uint64
	Payload                            []byte
	Recipients                         []string
	State                              string
	Attempts, LastStatus               int
	LastError                          string
	NextAttemptAt, ExpiresAt           time.Time
	CreatedAt                          time.Time
	DeliveredAt                        *time.Time
}

// Enqueue inserts deliveries in tx. A delivery already recorded (the same
// subscription and event: a redelivery) is left alone unless reset, which
// queues it again (a replay).
func Enqueue(ctx context.Context, tx pgx.Tx, ds []Delivery, reset bool) (int, error) {
	if len(ds) == 0 {
		return 0, nil
	}
	conflict := `DO NOTHING`
	if reset {
		conflict = `DO UPDATE SET state = 'pending', next_attempt_at = now(), expires_at = EXCLUDED.expires_at, delivered_at = NULL`
	}
	b := &pgx.Batch{}
	for _, d := range ds {
		b.Queue(`INSERT INTO notification_deliveries (tenant_id, delivery_id, subscription_id, kind, event_id, event_kind,
			conversation_id, stream_seq, payload, recipients, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)
			ON CONFLICT (tenant_id, delivery_id) `+conflict,
			d.TenantID, d.ID, d.SubscriptionID, d.Kind, d.EventID, d.EventKind, d.Conversation, int64(d.StreamSeq), d.Payload,
			nonNil(d.Recipients), d.ExpiresAt)
	}
	res := tx.SendBatch(ctx, b)
	n := 0
	for range ds {
		tag, err := res.Exec()
		if err != nil {
			_ = res.Close()
			return n, err
		}
		n += int(tag.RowsAffected())
	}
	return n, res.Close()
}

const delColumns = `tenant_id, delivery_id, subscription_id, kind, event_id, event_kind, conversation_id, stream_seq, payload,
	recipients, state, attempts, last_status, last_error, next_attempt_at, expires_at, created_at, delivered_at`

func scanDelivery(r pgx.Row, extra ...any) (*Delivery, error) {
	var d Delivery
	var seq int64
	err := r.Scan(append([]any{&d.TenantID, &d.ID, &d.SubscriptionID, &d.Kind, &d.EventID, &d.EventKind, &d.Conversation, &seq, &d.Payload,
		&d.Recipients, &d.State, &d.Attempts, &d.LastStatus, &d.LastError, &d.NextAttemptAt, &d.ExpiresAt, &d.CreatedAt, &d.DeliveredAt}, extra...)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	d.StreamSeq = uint64(seq)
	return &d, err
}

// Delivery reads one delivery.
func (s *Store) Delivery(ctx context.Context, tenant, id string) (*Delivery, error) {
	return scanDelivery(s.pool.QueryRow(ctx, `SELECT `+delColumns+` FROM notification_deliveries WHERE tenant_id = $1 AND delivery_id = $2`, tenant, id))
}

// Deliveries lists a subscription's deliveries, newest first; state
// optionally filters.
func (s *Store) Deliveries(ctx context.Context, tenant, sub, state string, limit int) ([]*Delivery, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+delColumns+` FROM notification_deliveries
		WHERE tenant_id = $1 AND subscription_id = $2 AND ($3 = '' OR state = $3) ORDER BY created_at DESC, delivery_id LIMIT $4`,
		tenant, sub, state, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Delivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Requeue queues one delivery again now, for retryFor.
func (s *Store) Requeue(ctx context.Context, tenant, id string, expires time.Time) (*Delivery, error) {
	return scanDelivery(s.pool.QueryRow(ctx, `UPDATE notification_deliveries SET state = 'pending', next_attempt_at = now(),
		expires_at = $3, delivered_at = NULL WHERE tenant_id = $1 AND delivery_id = $2 RETURNING `+delColumns, tenant, id, expires))
}

// Attempt is one row of notification_attempts.
type Attempt struct {
	TenantID, DeliveryID, SubscriptionID string
	At                                   time.Time
	Status, LatencyMS                    int
	Error                                string
	Success                              bool
}

// Attempts lists a subscription's attempts (of one delivery when
// delivery is set), newest first.
func (s *Store) Attempts(ctx context.Context, tenant, sub, delivery string, limit int) ([]Attempt, error) {
	rows, err := s.pool.Query(ctx, `SELECT tenant_id, delivery_id, subscription_id, attempted_at, status_code, latency_ms, error, success
		FROM notification_attempts WHERE tenant_id = $1 AND subscription_id = $2 AND ($3 = '' OR delivery_id = $3)
		ORDER BY id DESC LIMIT $4`, tenant, sub, delivery, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Attempt
	for rows.Next() {
		var a Attempt
		if err := rows.Scan(&a.TenantID, &a.DeliveryID, &a.SubscriptionID, &a.At, &a.Status, &a.LatencyMS, &a.Error, &a.Success); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// TranscriptSubscription returns the tenant's built-in email subscription
// that carries SendTranscript's deliveries (it selects no event), creating
// it on first use.
func (s *Store) TranscriptSubscription(ctx context.Context, tenant string) (*Subscription, error) {
	id := "sub_transcripts_" + tenant
	if _, err := s.pool.Exec(ctx, `INSERT INTO notification_subscriptions (tenant_id, subscription_id, name, kind, event_kinds)
		VALUES ($1, $2, 'transcripts (SendTranscript)', 'email', '{transcript}') ON CONFLICT DO NOTHING`, tenant, id); err != nil {
		return nil, err
	}
	return s.Subscription(ctx, tenant, id)
}
