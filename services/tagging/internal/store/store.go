// Package store is tagging's PostgreSQL state: rules, detector settings, the
// label catalogue, each conversation's folded facts, the tags in effect and
// the transactional outbox of derived events.
//
// Locking, in the order every transaction takes them (so they cannot
// deadlock): a tenant's tagging_tenants row (exclusive for rule and settings
// changes, FOR SHARE for the live consumer and backfill writes), then one
// advisory lock per conversation written (sorted by key). The conversation
// locks serialise live tagging and backfill on the same conversation, so a
// tag is never applied twice, and whether another rule still holds a tag is
// decided on committed data.
package store

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/pgstore"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"google.golang.org/protobuf/proto"
)

//go:embed migrations/*.sql
var migrations embed.FS

// VersionTable records which of tagging's migrations were applied.
const VersionTable = "goose_tagging"

// Migrate applies tagging's migrations.
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
	ErrExists   = errors.New("store: already exists")
	// ErrTooManyRules is CreateRule's answer when the tenant already has
	// the most rules allowed.
	ErrTooManyRules = errors.New("store: the tenant has the most rules allowed")
	ErrRuleChanged  = errors.New("store: the rule changed meanwhile")
)

// Sources of applied tags, as stored.
const (
	SourceRule     = "rule"
	SourceDetector = "builtin_detector"
	SourceBackfill = "backfill"
)

// Store is tagging's database.
type Store struct {
	pool *pgxpool.Pool
}

// New wraps a pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// Pool exposes the pool (readiness checks, tests).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// InTx runs f in a READ COMMITTED transaction and commits it. A deadlock or
// serialisation failure is retried up to three times.
func (s *Store) InTx(ctx context.Context, f func(pgx.Tx) error) error {
	var err error
	for attempt := range 4 {
		if attempt > 0 {
			time.Sleep(time.Duration(attempt*attempt) * 20 * time.Millisecond)
		}
		err = pgx.BeginFunc(ctx, s.pool, f)
		if !retryable(err) {
			return err
		}
	}
	return err
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// bumpGeneration takes the tenant's row exclusively and moves its generation.
func bumpGeneration(ctx context.Context, tx pgx.Tx, tenant string) error {
	_, err := tx.Exec(ctx, `INSERT INTO tagging_tenants (tenant_id, generation) VALUES ($1, 1)
		ON CONFLICT (tenant_id) DO UPDATE SET generation = tagging_tenants.generation + 1`, tenant)
	if err != nil {
		return fmt.Errorf("store: bump generation: %w", err)
	}
	return nil
}

// LockTenants returns the generation of each tenant, holding their rows FOR
// SHARE until the transaction ends (rule changes wait). Tenants without a
// row have generation 0.
func LockTenants(ctx context.Context, tx pgx.Tx, tenants []string) (map[string]int64, error) {
	sorted := slices.Clone(tenants)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	rows, err := tx.Query(ctx, `SELECT tenant_id, generation FROM tagging_tenants WHERE tenant_id = ANY($1) ORDER BY tenant_id FOR SHARE`, sorted)
	if err != nil {
		return nil, fmt.Errorf("store: lock tenants: %w", err)
	}
	gens := make(map[string]int64, len(sorted))
	for _, t := range sorted {
		gens[t] = 0
	}
	var t string
	var g int64
	_, err = pgx.ForEachRow(rows, []any{&t, &g}, func() error { gens[t] = g; return nil })
	if err != nil {
		return nil, fmt.Errorf("store: lock tenants: %w", err)
	}
	return gens, nil
}

// ConvKey names one conversation.
type ConvKey struct {
	TenantID, ConversationID string
}

func lockKey(k ConvKey) int64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte("tagging\x00" + k.TenantID + "\x00" + k.ConversationID))
	return int64(h.Sum64())
}

// LockConversations takes a transaction-scoped advisory lock per
// conversation, in key order.
func LockConversations(ctx context.Context, tx pgx.Tx, keys []ConvKey) error {
	ks := make([]int64, 0, len(keys))
	for _, k := range keys {
		ks = append(ks, lockKey(k))
	}
	slices.Sort(ks)
	ks = slices.Compact(ks)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS u(k, o) ORDER BY o`, ks); err != nil {
		return fmt.Errorf("store: lock conversations: %w", err)
	}
	return nil
}

// ConvState is one conversation's folded facts.
type ConvState struct {
	AppliedSeq uint64
	// EvaluatedGen is the tenant generation + 1 under which every rule was
	// last evaluated on this conversation (0: never).
	EvaluatedGen int64
	Facts        *taggingv1.RuleConversation
	LastEvent    *taggingv1.RuleEvent
	// Dirty marks states to save.
	Dirty bool
	// Size is the encoded size of Facts and LastEvent when the state was
	// last loaded or saved (a measure of its memory for caches).
	Size int
	// Stored says that the conversation has a row (ReadBatch; callers set
	// it once a new state was saved).
	Stored bool
	// TagsRev is the row's tags_rev: it moves when anything but live
	// tagging changes the conversation's tags (ReadBatch).
	TagsRev int64
	// Ctid is where the row's current version is, as ReadBatch found it in
	// the same transaction (QueueSaveStates updates the row there, without
	// searching the primary key).
	Ctid pgtype.TID
	// Tags are the tags in effect on the conversation, with the version of
	// the rule that holds each (ReadBatch; live tagging adds what it
	// applies).
	Tags map[AppliedKey]int64
	// checked is the last message of Facts known to be valid UTF-8, with
	// those before it (see appendFacts).
	checked *taggingv1.RuleMessage
}

// AppliedKey names a tag in effect on a conversation: the rule (or
// builtin:<detector>) and the tag.
type AppliedKey struct{ RuleID, Tag string }

func convIDs(keys []ConvKey) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.ConversationID
	}
	return out
}

func splitKeys(keys []ConvKey) (tenants, convs []string) {
	for _, k := range keys {
		tenants = append(tenants, k.TenantID)
		convs = append(convs, k.ConversationID)
	}
	return tenants, convs
}

// LoadStates reads the states of keys; conversations not seen before are
// absent from the result.
func LoadStates(ctx context.Context, q querier, keys []ConvKey) (map[ConvKey]*ConvState, error) {
	tenants, convs := splitKeys(keys)
	rows, err := q.Query(ctx, `SELECT c.tenant_id, c.conversation_id, c.applied_seq, c.evaluated_gen, c.facts, c.last_event
		FROM tagging_conversations c JOIN unnest($1::text[], $2::text[]) AS k(t, c) ON c.tenant_id = k.t AND c.conversation_id = k.c`, tenants, convs)
	if err != nil {
		return nil, fmt.Errorf("store: load states: %w", err)
	}
	out := make(map[ConvKey]*ConvState, len(keys))
	var k ConvKey
	var seq, gen int64
	var factsB, lastB []byte
	_, err = pgx.ForEachRow(rows, []any{&k.TenantID, &k.ConversationID, &seq, &gen, &factsB, &lastB}, func() error {
		st := &ConvState{AppliedSeq: uint64(seq), EvaluatedGen: gen, Stored: true, Facts: &taggingv1.RuleConversation{}, LastEvent: &taggingv1.RuleEvent{}}
		if err := proto.Unmarshal(factsB, st.Facts); err != nil {
			return fmt.Errorf("facts of %s/%s: %w", k.TenantID, k.ConversationID, err)
		}
		if err := proto.Unmarshal(lastB, st.LastEvent); err != nil {
			return fmt.Errorf("last event of %s/%s: %w", k.TenantID, k.ConversationID, err)
		}
		st.Size = len(factsB) + len(lastB)
		out[k] = st
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: load states: %w", err)
	}
	return out, nil
}

// ConversationState reads one conversation's state (ErrNotFound when
// tagging has not seen it).
func (s *Store) ConversationState(ctx context.Context, tenant, conv string) (*ConvState, error) {
	m, err := LoadStates(ctx, s.pool, []ConvKey{{tenant, conv}})
	if err != nil {
		return nil, err
	}
	st := m[ConvKey{tenant, conv}]
	if st == nil {
		return nil, ErrNotFound
	}
	return st, nil
}

// Applied is a tag in effect on a conversation.
type Applied struct {
	ConversationID string
	RuleID         string
	Tag            string
	Source         string
	RuleVersion    int64
	TriggerSeq     uint64
	EventID        string
}

// AppliedForRule reads every tag a rule holds in a tenant.
func (s *Store) AppliedForRule(ctx context.Context, tenant, ruleID string) ([]Applied, error) {
	rows, err := s.pool.Query(ctx, `SELECT conversation_id, rule_id, tag, source, rule_version, trigger_seq, event_id
		FROM tagging_applied WHERE tenant_id = $1 AND rule_id = $2`, tenant, ruleID)
	if err != nil {
		return nil, fmt.Errorf("store: applied of rule: %w", err)
	}
	var out []Applied
	var a Applied
	var seq int64
	_, err = pgx.ForEachRow(rows, []any{&a.ConversationID, &a.RuleID, &a.Tag, &a.Source, &a.RuleVersion, &seq, &a.EventID}, func() error {
		a.TriggerSeq = uint64(seq)
		out = append(out, a)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: applied of rule: %w", err)
	}
	return out, nil
}

// Application is a tag to apply with the events to publish if (and only if)
// it is new. An existing row of an older rule version is re-confirmed
// (version and trigger updated) without events.
type Application struct {
	TenantID string
	Applied
	Events []*eventv1.Envelope
}

// Apply records applications and queues their events in the outbox. It
// returns how many were new.
func Apply(ctx context.Context, tx pgx.Tx, apps []Application) (int, error) {
	b := &pgx.Batch{}
	var n int
	if err := QueueApply(b, apps, &n); err != nil {
		return 0, err
	}
	if b.Len() == 0 {
		return 0, nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, err
	}
	return n, nil
}

// applySQL records a set of applications in one statement: each row is
// inserted, or an existing row of an older rule version re-confirmed, and
// the events of the rows inserted are queued in the outbox in the order
// given.
const applySQL = `WITH a AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::text[])
		WITH ORDINALITY AS a(t, c, r, g, s, v, q, e, ord)
), ins AS (
	INSERT INTO tagging_applied (tenant_id, conversation_id, rule_id, tag, source, rule_version, trigger_seq, event_id)
	SELECT t, c, r, g, s, v, q, e FROM a ORDER BY ord
	ON CONFLICT (tenant_id, conversation_id, rule_id, tag) DO UPDATE
	SET rule_version = EXCLUDED.rule_version, trigger_seq = EXCLUDED.trigger_seq
	WHERE tagging_applied.rule_version < EXCLUDED.rule_version
	RETURNING tenant_id, conversation_id, rule_id, tag, (xmax = 0) AS inserted
), ob AS (
	INSERT INTO tagging_outbox (event_id, envelope)
	SELECT e.id, e.env FROM unnest($9::bigint[], $10::text[], $11::bytea[]) WITH ORDINALITY AS e(app, id, env, ord)
	JOIN a ON a.ord = e.app
	JOIN ins ON ins.inserted AND ins.tenant_id = a.t AND ins.conversation_id = a.c AND ins.rule_id = a.r AND ins.tag = a.g
	ORDER BY e.ord
)
SELECT count(*) FILTER (WHERE inserted) FROM ins`

// applyOneSQL is applySQL for one application.
const applyOneSQL = `WITH ins AS (
	INSERT INTO tagging_applied (tenant_id, conversation_id, rule_id, tag, source, rule_version, trigger_seq, event_id)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
	ON CONFLICT (tenant_id, conversation_id, rule_id, tag) DO UPDATE
	SET rule_version = EXCLUDED.rule_version, trigger_seq = EXCLUDED.trigger_seq
	WHERE tagging_applied.rule_version < EXCLUDED.rule_version
	RETURNING (xmax = 0) AS inserted
), ob AS (
	INSERT INTO tagging_outbox (event_id, envelope)
	SELECT e.id, e.env FROM unnest($9::text[], $10::bytea[]) WITH ORDINALITY AS e(id, env, ord), ins
	WHERE ins.inserted ORDER BY e.ord
)
SELECT count(*) FILTER (WHERE inserted) FROM ins`

// QueueApply queues on b what Apply does, adding the number of new rows to
// *n when b's results are read. Applications are recorded in one statement;
// should the same row appear twice (one statement cannot write a row
// twice), one statement per application, in order.
func QueueApply(b *pgx.Batch, apps []Application, n *int) error {
	if len(apps) == 0 {
		return nil
	}
	count := func(row pgx.Row) error {
		var c int64
		if err := row.Scan(&c); err != nil {
			return fmt.Errorf("store: apply tags: %w", err)
		}
		*n += int(c)
		return nil
	}
	type rowKey struct{ t, c, r, g string }
	seen := make(map[rowKey]bool, len(apps))
	unique := true
	for _, a := range apps {
		k := rowKey{a.TenantID, a.ConversationID, a.RuleID, a.Tag}
		if seen[k] {
			unique = false
			break
		}
		seen[k] = true
	}
	if !unique {
		for _, a := range apps {
			ids := make([]string, len(a.Events))
			envs := make([][]byte, len(a.Events))
			for i, e := range a.Events {
				data, err := proto.Marshal(e)
				if err != nil {
					return fmt.Errorf("store: marshal %s: %w", e.GetKind(), err)
				}
				ids[i], envs[i] = e.GetEventId(), data
			}
			b.Queue(applyOneSQL, a.TenantID, a.ConversationID, a.RuleID, a.Tag, a.Source, a.RuleVersion, int64(a.TriggerSeq), a.EventID, ids, envs).QueryRow(count)
		}
		return nil
	}
	cols := struct {
		t, c, r, g, s, e []string
		v, q             []int64
		app              []int64
		ids              []string
		envs             [][]byte
	}{}
	for i, a := range apps {
		cols.t = append(cols.t, a.TenantID)
		cols.c = append(cols.c, a.ConversationID)
		cols.r = append(cols.r, a.RuleID)
		cols.g = append(cols.g, a.Tag)
		cols.s = append(cols.s, a.Source)
		cols.v = append(cols.v, a.RuleVersion)
		cols.q = append(cols.q, int64(a.TriggerSeq))
		cols.e = append(cols.e, a.EventID)
		for _, e := range a.Events {
			data, err := proto.Marshal(e)
			if err != nil {
				return fmt.Errorf("store: marshal %s: %w", e.GetKind(), err)
			}
			cols.app = append(cols.app, int64(i+1))
			cols.ids = append(cols.ids, e.GetEventId())
			cols.envs = append(cols.envs, data)
		}
	}
	if cols.app == nil {
		cols.app, cols.ids, cols.envs = []int64{}, []string{}, [][]byte{}
	}
	b.Queue(applySQL, cols.t, cols.c, cols.r, cols.g, cols.s, cols.v, cols.q, cols.e, cols.app, cols.ids, cols.envs).QueryRow(count)
	return nil
}

// Removal is a tag to take off a conversation.
type Removal struct {
	ConversationID, Tag string
	// Guarded removals only delete a row applied by an older rule version
	// or triggered at or before GuardSeq: a row the current version applied
	// on later events (live tagging while a backfill ran) stays.
	Guarded bool
}

// RemovedFunc builds the TagRemoved event of a removed row; it is called
// only when no other rule or detector still holds the same tag on the
// conversation.
type RemovedFunc func(a Applied) *eventv1.Envelope

// Remove deletes rule's tags per removals and queues TagRemoved events. It
// returns how many rows were deleted.
func Remove(ctx context.Context, tx pgx.Tx, tenant, ruleID string, removals []Removal, version int64, guardSeq uint64, mk RemovedFunc) (int, error) {
	if len(removals) == 0 {
		return 0, nil
	}
	b := &pgx.Batch{}
	for _, r := range removals {
		b.Queue(`DELETE FROM tagging_applied
			WHERE tenant_id = $1 AND conversation_id = $2 AND rule_id = $3 AND tag = $4
			AND (NOT $5 OR rule_version < $6 OR trigger_seq <= $7)
			RETURNING source, rule_version, trigger_seq, event_id`,
			tenant, r.ConversationID, ruleID, r.Tag, r.Guarded, version, int64(guardSeq))
		b.Queue(`SELECT EXISTS (SELECT 1 FROM tagging_applied WHERE tenant_id = $1 AND conversation_id = $2 AND tag = $3)`,
			tenant, r.ConversationID, r.Tag)
	}
	res := tx.SendBatch(ctx, b)
	n := 0
	var envs []*eventv1.Envelope
	for _, r := range removals {
		a := Applied{ConversationID: r.ConversationID, RuleID: ruleID, Tag: r.Tag}
		var seq int64
		err := res.QueryRow().Scan(&a.Source, &a.RuleVersion, &seq, &a.EventID)
		deleted := err == nil
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			_ = res.Close()
			return 0, fmt.Errorf("store: remove tag: %w", err)
		}
		a.TriggerSeq = uint64(seq)
		var held bool
		if err := res.QueryRow().Scan(&held); err != nil {
			_ = res.Close()
			return 0, fmt.Errorf("store: remove tag: %w", err)
		}
		if deleted {
			n++
			if !held {
				envs = append(envs, mk(a))
			}
		}
	}
	if err := res.Close(); err != nil {
		return 0, fmt.Errorf("store: remove tags: %w", err)
	}
	if err := insertOutbox(ctx, tx, envs); err != nil {
		return 0, err
	}
	return n, nil
}

func insertOutbox(ctx context.Context, tx pgx.Tx, envs []*eventv1.Envelope) error {
	if len(envs) == 0 {
		return nil
	}
	ids := make([]string, len(envs))
	data := make([][]byte, len(envs))
	for i, e := range envs {
		b, err := proto.Marshal(e)
		if err != nil {
			return fmt.Errorf("store: marshal %s: %w", e.GetKind(), err)
		}
		ids[i], data[i] = e.GetEventId(), b
	}
	_, err := tx.Exec(ctx, `INSERT INTO tagging_outbox (event_id, envelope)
		SELECT id, env FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS e(id, env, ord) ORDER BY ord`, ids, data)
	if err != nil {
		return fmt.Errorf("store: outbox: %w", err)
	}
	return nil
}

// OutboxRow is a derived event waiting to be published.
type OutboxRow struct {
	ID       int64
	Envelope []byte
}

// PendingOutbox returns up to limit rows, oldest first.
func (s *Store) PendingOutbox(ctx context.Context, limit int) ([]OutboxRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, envelope FROM tagging_outbox ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: outbox: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[OutboxRow])
	if err != nil {
		return nil, fmt.Errorf("store: outbox: %w", err)
	}
	return out, nil
}

// DeleteOutbox removes published rows.
func (s *Store) DeleteOutbox(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM tagging_outbox WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("store: outbox delete: %w", err)
	}
	return nil
}

// Rule is a stored rule. CreatedBy and UpdatedBy are the actors (API keys)
// that created it and last changed it.
type Rule struct {
	TenantID, RuleID, Name, Expression, Tag, Description string
	Enabled                                              bool
	Version                                              int64
	CreatedAt, UpdatedAt                                 time.Time
	CreatedBy, UpdatedBy                                 string
}

const ruleCols = `tenant_id, rule_id, name, expression, tag, description, enabled, version, created_at, updated_at, created_by, updated_by`

func scanRule(row pgx.Row) (Rule, error) {
	var r Rule
	err := row.Scan(&r.TenantID, &r.RuleID, &r.Name, &r.Expression, &r.Tag, &r.Description, &r.Enabled, &r.Version, &r.CreatedAt, &r.UpdatedAt,
		&r.CreatedBy, &r.UpdatedBy)
	return r, err
}

// CreateRule stores a new rule at version 1, created and updated by
// r.CreatedBy: ErrExists when the id is taken, ErrTooManyRules when the
// tenant already has maxRules rules (0: no limit).
func (s *Store) CreateRule(ctx context.Context, r Rule, maxRules int) (Rule, error) {
	var out Rule
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		// bumpGeneration locks the tenant's row: rule changes of one tenant
		// take turns, so the count below cannot race another CreateRule.
		if err := bumpGeneration(ctx, tx, r.TenantID); err != nil {
			return err
		}
		if maxRules > 0 {
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM tagging_rules WHERE tenant_id = $1`, r.TenantID).Scan(&n); err != nil {
				return err
			}
			if n >= maxRules {
				return ErrTooManyRules
			}
		}
		var err error
		out, err = scanRule(tx.QueryRow(ctx, `INSERT INTO tagging_rules (tenant_id, rule_id, name, expression, tag, description, enabled, version, created_by, updated_by)
			VALUES ($1, $2, $3, $4, $5, $6, $7, 1, $8, $8) RETURNING `+ruleCols,
			r.TenantID, r.RuleID, r.Name, r.Expression, r.Tag, r.Description, r.Enabled, r.CreatedBy))
		return err
	})
	if isUniqueViolation(err) {
		return Rule{}, ErrExists
	}
	if errors.Is(err, ErrTooManyRules) {
		return Rule{}, ErrTooManyRules
	}
	if err != nil {
		return Rule{}, fmt.Errorf("store: create rule: %w", err)
	}
	return out, nil
}

// GetRule reads one rule (ErrNotFound).
func (s *Store) GetRule(ctx context.Context, tenant, ruleID string) (Rule, error) {
	r, err := scanRule(s.pool.QueryRow(ctx, `SELECT `+ruleCols+` FROM tagging_rules WHERE tenant_id = $1 AND rule_id = $2`, tenant, ruleID))
	if errors.Is(err, pgx.ErrNoRows) {
		return Rule{}, ErrNotFound
	}
	if err != nil {
		return Rule{}, fmt.Errorf("store: get rule: %w", err)
	}
	return r, nil
}

// ListRules reads a tenant's rules, oldest first.
func (s *Store) ListRules(ctx context.Context, tenant string) ([]Rule, error) {
	return listRules(ctx, s.pool, tenant, false)
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func listRules(ctx context.Context, q querier, tenant string, enabledOnly bool) ([]Rule, error) {
	rows, err := q.Query(ctx, `SELECT `+ruleCols+` FROM tagging_rules WHERE tenant_id = $1 AND (enabled OR NOT $2) ORDER BY created_at, rule_id`, tenant, enabledOnly)
	if err != nil {
		return nil, fmt.Errorf("store: list rules: %w", err)
	}
	var out []Rule
	for rows.Next() {
		r, err := scanRule(rows)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("store: list rules: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list rules: %w", err)
	}
	return out, nil
}

// UpdateRule changes a rule under lock: mutate edits it and reports whether
// anything changed; a change bumps its version and records by as its
// updated_by (ErrNotFound).
func (s *Store) UpdateRule(ctx context.Context, tenant, ruleID, by string, mutate func(*Rule) (bool, error)) (Rule, error) {
	var out Rule
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		if err := bumpGeneration(ctx, tx, tenant); err != nil {
			return err
		}
		r, err := scanRule(tx.QueryRow(ctx, `SELECT `+ruleCols+` FROM tagging_rules WHERE tenant_id = $1 AND rule_id = $2 FOR UPDATE`, tenant, ruleID))
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		changed, err := mutate(&r)
		if err != nil {
			return err
		}
		if !changed {
			out = r
			return nil
		}
		out, err = scanRule(tx.QueryRow(ctx, `UPDATE tagging_rules SET name = $3, expression = $4, tag = $5, description = $6, enabled = $7,
			version = version + 1, updated_at = now(), updated_by = $8 WHERE tenant_id = $1 AND rule_id = $2 RETURNING `+ruleCols,
			tenant, ruleID, r.Name, r.Expression, r.Tag, r.Description, r.Enabled, by))
		return err
	})
	if errors.Is(err, ErrNotFound) {
		return Rule{}, ErrNotFound
	}
	if err != nil {
		return Rule{}, fmt.Errorf("store: update rule: %w", err)
	}
	return out, nil
}

// DeleteRule deletes a rule and every tag it holds, queueing TagRemoved for
// tags no other rule or detector holds. It returns the number of tags
// removed (ErrNotFound).
func (s *Store) DeleteRule(ctx context.Context, tenant, ruleID string, mk RemovedFunc) (int, error) {
	var n int
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		if err := bumpGeneration(ctx, tx, tenant); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM tagging_rules WHERE tenant_id = $1 AND rule_id = $2`, tenant, ruleID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		rows, err := tx.Query(ctx, `SELECT conversation_id, tag FROM tagging_applied WHERE tenant_id = $1 AND rule_id = $2`, tenant, ruleID)
		if err != nil {
			return err
		}
		var removals []Removal
		var keys []ConvKey
		var r Removal
		if _, err := pgx.ForEachRow(rows, []any{&r.ConversationID, &r.Tag}, func() error {
			removals = append(removals, r)
			keys = append(keys, ConvKey{tenant, r.ConversationID})
			return nil
		}); err != nil {
			return err
		}
		if err := LockConversations(ctx, tx, keys); err != nil {
			return err
		}
		if n, err = Remove(ctx, tx, tenant, ruleID, removals, 0, 0, mk); err != nil {
			return err
		}
		return bumpTagsRev(ctx, tx, tenant, convIDs(keys))
	})
	if errors.Is(err, ErrNotFound) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("store: delete rule: %w", err)
	}
	return n, nil
}

// BackfillChunk applies and removes one rule's tags on a set of
// conversations in one transaction, after checking that the rule is still
// at version (else ErrRuleChanged).
func (s *Store) BackfillChunk(ctx context.Context, tenant, ruleID string, version int64, apply []Application, removals []Removal, guardSeq uint64, mk RemovedFunc) (applied, removed int, err error) {
	err = s.InTx(ctx, func(tx pgx.Tx) error {
		applied, removed = 0, 0
		if _, err := LockTenants(ctx, tx, []string{tenant}); err != nil {
			return err
		}
		var cur int64
		var enabled bool
		err := tx.QueryRow(ctx, `SELECT version, enabled FROM tagging_rules WHERE tenant_id = $1 AND rule_id = $2`, tenant, ruleID).Scan(&cur, &enabled)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (cur != version || !enabled)) {
			return ErrRuleChanged
		}
		if err != nil {
			return err
		}
		var keys []ConvKey
		for _, a := range apply {
			keys = append(keys, ConvKey{tenant, a.ConversationID})
		}
		for _, r := range removals {
			keys = append(keys, ConvKey{tenant, r.ConversationID})
		}
		if err := LockConversations(ctx, tx, keys); err != nil {
			return err
		}
		if applied, err = Apply(ctx, tx, apply); err != nil {
			return err
		}
		if removed, err = Remove(ctx, tx, tenant, ruleID, removals, version, guardSeq, mk); err != nil {
			return err
		}
		return bumpTagsRev(ctx, tx, tenant, convIDs(keys))
	})
	if errors.Is(err, ErrRuleChanged) {
		return 0, 0, ErrRuleChanged
	}
	if err != nil {
		return 0, 0, fmt.Errorf("store: backfill: %w", err)
	}
	return applied, removed, nil
}

// DetectorSettings is a tenant's stored detector configuration; zero fields
// mean the service default. Disabled, when Set, replaces the default list.
type DetectorSettings struct {
	Set             bool     `json:"-"`
	Disabled        []string `json:"disabled"`
	LongWaitMS      int64    `json:"long_wait_ms,omitempty"`
	RepeatWindow    int      `json:"repeat_window,omitempty"`
	NegativePhrases []string `json:"negative_phrases,omitempty"`
}

// Ruleset is what the live consumer needs of a tenant.
type Ruleset struct {
	Rules     []Rule
	Detectors DetectorSettings
}

// LoadRuleset reads a tenant's enabled rules and detector settings.
func LoadRuleset(ctx context.Context, tx pgx.Tx, tenant string) (Ruleset, error) {
	var rs Ruleset
	var err error
	if rs.Rules, err = listRules(ctx, tx, tenant, true); err != nil {
		return rs, err
	}
	rs.Detectors, err = detectorSettings(ctx, tx, tenant)
	return rs, err
}

// DetectorSettings reads a tenant's stored settings (Set false when none).
func (s *Store) DetectorSettings(ctx context.Context, tenant string) (DetectorSettings, error) {
	return detectorSettings(ctx, s.pool, tenant)
}

func detectorSettings(ctx context.Context, q querier, tenant string) (DetectorSettings, error) {
	var raw []byte
	var ds DetectorSettings
	err := q.QueryRow(ctx, `SELECT settings FROM tagging_detector_settings WHERE tenant_id = $1`, tenant).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return ds, nil
	}
	if err != nil {
		return ds, fmt.Errorf("store: detector settings: %w", err)
	}
	if err := json.Unmarshal(raw, &ds); err != nil {
		return ds, fmt.Errorf("store: detector settings: %w", err)
	}
	ds.Set = true
	return ds, nil
}

// SetDetectorSettings replaces a tenant's settings.
func (s *Store) SetDetectorSettings(ctx context.Context, tenant string, ds DetectorSettings) error {
	if ds.Disabled == nil {
		ds.Disabled = []string{}
	}
	raw, err := json.Marshal(ds)
	if err != nil {
		return err
	}
	return s.InTx(ctx, func(tx pgx.Tx) error {
		if err := bumpGeneration(ctx, tx, tenant); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO tagging_detector_settings (tenant_id, settings, updated_at) VALUES ($1, $2, now())
			ON CONFLICT (tenant_id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = now()`, tenant, raw)
		if err != nil {
			return fmt.Errorf("store: set detector settings: %w", err)
		}
		return nil
	})
}

// Label is a catalogue entry.
type Label struct {
	Label, CreatedBy string
	CreatedAt        time.Time
}

// EnsureLabel adds label to the tenant's catalogue unless it is there.
func (s *Store) EnsureLabel(ctx context.Context, tenant, label, by string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO tagging_labels (tenant_id, label, created_by) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`, tenant, label, by)
	if err != nil {
		return fmt.Errorf("store: label: %w", err)
	}
	return nil
}

// LabelExists reports whether the catalogue has label.
func (s *Store) LabelExists(ctx context.Context, tenant, label string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tagging_labels WHERE tenant_id = $1 AND label = $2)`, tenant, label).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("store: label: %w", err)
	}
	return ok, nil
}

// ListLabels reads the catalogue, by name.
func (s *Store) ListLabels(ctx context.Context, tenant string) ([]Label, error) {
	rows, err := s.pool.Query(ctx, `SELECT label, created_by, created_at FROM tagging_labels WHERE tenant_id = $1 ORDER BY label`, tenant)
	if err != nil {
		return nil, fmt.Errorf("store: labels: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[Label])
	if err != nil {
		return nil, fmt.Errorf("store: labels: %w", err)
	}
	return out, nil
}
