// Package store keeps lifecycle's state in PostgreSQL: one row per
// conversation with the stream sequence applied to it, the session timeout
// settings, the consumer's position and the transactional outbox of derived
// events.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/pgstore"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/lifecycle/internal/machine"
)

//go:embed migrations/*.sql
var migrations embed.FS

// VersionTable is goose's version table for lifecycle's schema.
const VersionTable = "goose_lifecycle"

// ErrNotFound is returned for an unknown conversation.
var ErrNotFound = errors.New("conversation not found")

// Migrate applies lifecycle's schema.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	return pgstore.Migrate(ctx, pool, sub, VersionTable, log)
}

// Key names a conversation.
type Key struct{ TenantID, ConversationID string }

// Store reads and writes lifecycle's tables.
type Store struct {
	pool           *pgxpool.Pool
	defaultTimeout int32
}

// New returns a store; defaultTimeout is the session timeout of
// conversations without a more specific setting.
func New(pool *pgxpool.Pool, defaultTimeout time.Duration) *Store {
	return &Store{pool: pool, defaultTimeout: seconds(defaultTimeout)}
}

// Tx runs f in a transaction and commits when f returns nil.
func (s *Store) Tx(ctx context.Context, f func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, f)
}

const stateCols = `tenant_id, conversation_id, status, channel, bot_id, conversation_type, started_at, last_activity_at, last_recorded_at,
	ended_at, end_reason, ended_by, end_seq, handoff_requested_at, handoff_event_id, awaiting_agent, operator_no_response,
	takeover_at, agent_id, agent_name, agent_joined_at, agent_left_at, pending_visitor_at, first_response_ms, agent_replies,
	agent_response_ms_sum, visitor_messages, goals_reached, flows_completed, late_events, engagement, resolved, applied_seq, debug_enabled`

// idleSince is when a conversation's idleness starts: the later of its last
// activity by the client's clock and ingest's recording of it, so that
// history imported with old timestamps is not stale between its requests.
// The session timeout (stale_at) and EndIdle count from it.
const idleSince = `GREATEST(last_activity_at, last_recorded_at)`

// StateColumns lists the columns that make up a conversation's state (all
// but scheduling and bookkeeping: stale_at, updated_at).
func StateColumns() []string {
	var out []string
	for c := range strings.SplitSeq(stateCols, ",") {
		out = append(out, strings.TrimSpace(c))
	}
	return out
}

// stateTypes are the PostgreSQL types of the state columns, in stateCols
// order: the element types of the arrays upsertSQL unnests.
var stateTypes = []string{"text", "text", "text", "text", "text", "text", "timestamptz", "timestamptz", "timestamptz",
	"timestamptz", "text", "text", "bigint", "timestamptz", "text", "boolean", "boolean",
	"timestamptz", "text", "text", "timestamptz", "timestamptz", "timestamptz", "bigint", "integer",
	"bigint", "integer", "integer", "integer", "integer", "text", "boolean", "bigint", "boolean"}

// upsertSQL writes many states in one statement: one array parameter per
// state column (see stateArrays), unnested into rows; the last parameter is
// the default session timeout. stale_at is each row's idle start (idleSince)
// plus its session timeout, resolved as lifecycle_session_timeout (migrations)
// does, but by joins: the function's three look-ups per row cost more than
// the rest of the statement.
var upsertSQL = func() string {
	cols := StateColumns()
	if len(cols) != len(stateTypes) {
		panic("store: stateTypes does not match stateCols")
	}
	arrays := make([]string, len(cols))
	set := make([]string, 0, len(cols))
	for i, c := range cols {
		arrays[i] = "$" + strconv.Itoa(i+1) + "::" + stateTypes[i] + "[]"
		if c != "tenant_id" && c != "conversation_id" {
			set = append(set, c+" = EXCLUDED."+c)
		}
	}
	n := len(cols)
	return `INSERT INTO lifecycle_conversations (` + stateCols + `, stale_at, updated_at)
		SELECT u.*, GREATEST(u.last_activity_at, u.last_recorded_at) + make_interval(secs => COALESCE(tc.timeout_seconds, ta.timeout_seconds, sc.timeout_seconds, $` + strconv.Itoa(n+1) + `::integer)), now()
		FROM unnest(` + strings.Join(arrays, ", ") + `) AS u(` + stateCols + `)
		-- The tenant's channel, the tenant's every channel, the service's channel.
		LEFT JOIN lifecycle_session_timeouts tc ON tc.tenant_id = u.tenant_id AND tc.channel = u.channel
		LEFT JOIN lifecycle_session_timeouts ta ON ta.tenant_id = u.tenant_id AND ta.channel = '*'
		LEFT JOIN lifecycle_session_timeouts sc ON sc.tenant_id = '*' AND sc.channel = u.channel
		ON CONFLICT (tenant_id, conversation_id) DO UPDATE SET ` + strings.Join(set, ", ") + `, stale_at = EXCLUDED.stale_at, updated_at = now()`
}()

// stateArrays turns states into upsertSQL's column arrays (NULL as a nil
// pointer).
func stateArrays(states []machine.State) []any {
	k := len(states)
	strs := func() []string { return make([]string, k) }
	times := func() []*time.Time { return make([]*time.Time, k) }
	ints := func() []int32 { return make([]int32, k) }
	bools := func() []bool { return make([]bool, k) }
	tenant, conv, status, channel, bot, ctype := strs(), strs(), strs(), strs(), strs(), strs()
	started, lastActivity, lastRecorded := make([]time.Time, k), make([]time.Time, k), make([]time.Time, k)
	endedAt, endReason, endedBy, endSeq := times(), make([]*string, k), strs(), make([]int64, k)
	handoffAt, handoffID, awaiting, noResponse := times(), strs(), bools(), bools()
	takeoverAt, agentID, agentName, joinedAt, leftAt, pendingAt, firstResponse, replies := times(), strs(), strs(), times(), times(), times(), make([]*int64, k), ints()
	responseSum, visitorMsgs, goals, flows, late, engagement, resolved, appliedSeq := make([]int64, k), ints(), ints(), ints(), ints(), make([]*string, k), bools(), make([]int64, k)
	debug := bools()
	for i, st := range states {
		tenant[i], conv[i], status[i], channel[i], bot[i], ctype[i] = st.TenantID, st.ConversationID, st.Status.String(), st.Channel.String(), st.BotID, st.Type.String()
		started[i], lastActivity[i], lastRecorded[i] = st.StartedAt, st.LastActivityAt, st.LastRecordedAt
		endedAt[i], endReason[i], endedBy[i], endSeq[i] = timePtr(st.EndedAt), enumPtr(int32(st.EndReason), st.EndReason.String()), st.EndedBy, int64(st.EndSeq)
		handoffAt[i], handoffID[i], awaiting[i], noResponse[i] = timePtr(st.HandoffRequestedAt), st.HandoffEventID, st.AwaitingAgent, st.OperatorNoResponse
		takeoverAt[i], agentID[i], agentName[i] = timePtr(st.TakeoverAt), st.AgentID, st.AgentName
		joinedAt[i], leftAt[i], pendingAt[i] = timePtr(st.AgentJoinedAt), timePtr(st.AgentLeftAt), timePtr(st.PendingVisitorAt)
		if st.HasFirstResponse {
			v := int64(st.FirstResponseMS)
			firstResponse[i] = &v
		}
		replies[i], responseSum[i], visitorMsgs[i] = int32(st.AgentReplies), int64(st.AgentResponseMSSum), int32(st.VisitorMessages)
		goals[i], flows[i], late[i] = int32(st.GoalsReached), int32(st.FlowsCompleted), int32(st.LateEvents)
		engagement[i], resolved[i], appliedSeq[i] = enumPtr(int32(st.Engagement), st.Engagement.String()), st.Resolved, int64(st.AppliedSeq)
		debug[i] = st.DebugEnabled
	}
	return []any{
		tenant, conv, status, channel, bot, ctype, started, lastActivity, lastRecorded,
		endedAt, endReason, endedBy, endSeq, handoffAt, handoffID, awaiting, noResponse,
		takeoverAt, agentID, agentName, joinedAt, leftAt, pendingAt, firstResponse, replies,
		responseSum, visitorMsgs, goals, flows, late, engagement, resolved, appliedSeq, debug,
	}
}

func scanState(row pgx.Row) (machine.State, error) {
	var (
		st                                                          machine.State
		status, channel, ctype                                      string
		endReason, engagement                                       *string
		endedAt, handoffAt, takeoverAt, joinedAt, leftAt, pendingAt *time.Time
		endSeq, firstResponse, responseSum, appliedSeq              *int64
		replies, visitorMsgs, goals, flows, late                    int32
	)
	err := row.Scan(&st.TenantID, &st.ConversationID, &status, &channel, &st.BotID, &ctype, &st.StartedAt, &st.LastActivityAt, &st.LastRecordedAt,
		&endedAt, &endReason, &st.EndedBy, &endSeq, &handoffAt, &st.HandoffEventID, &st.AwaitingAgent, &st.OperatorNoResponse,
		&takeoverAt, &st.AgentID, &st.AgentName, &joinedAt, &leftAt, &pendingAt, &firstResponse, &replies,
		&responseSum, &visitorMsgs, &goals, &flows, &late, &engagement, &st.Resolved, &appliedSeq, &st.DebugEnabled)
	if err != nil {
		return st, err
	}
	st.Status = machine.ParseStatus(status)
	st.Channel = eventv1.Channel(eventv1.Channel_value[channel])
	st.Type = eventv1.ConversationType(eventv1.ConversationType_value[ctype])
	st.StartedAt, st.LastActivityAt, st.LastRecordedAt = st.StartedAt.UTC(), st.LastActivityAt.UTC(), st.LastRecordedAt.UTC()
	st.EndedAt, st.HandoffRequestedAt, st.TakeoverAt = timeOf(endedAt), timeOf(handoffAt), timeOf(takeoverAt)
	st.AgentJoinedAt, st.AgentLeftAt, st.PendingVisitorAt = timeOf(joinedAt), timeOf(leftAt), timeOf(pendingAt)
	if endReason != nil {
		st.EndReason = eventv1.EndReason(eventv1.EndReason_value[*endReason])
	}
	if engagement != nil {
		st.Engagement = eventv1.Engagement(eventv1.Engagement_value[*engagement])
	}
	if firstResponse != nil {
		st.HasFirstResponse, st.FirstResponseMS = true, uint32(*firstResponse)
	}
	st.EndSeq, st.AgentResponseMSSum, st.AppliedSeq = uint64(deref(endSeq)), uint64(deref(responseSum)), uint64(deref(appliedSeq))
	st.AgentReplies, st.VisitorMessages, st.GoalsReached, st.FlowsCompleted, st.LateEvents = uint32(replies), uint32(visitorMsgs), uint32(goals), uint32(flows), uint32(late)
	return st, nil
}

func collectStates(rows pgx.Rows) ([]machine.State, error) {
	defer rows.Close()
	var out []machine.State
	for rows.Next() {
		st, err := scanState(rows)
		if err != nil {
			return nil, fmt.Errorf("store: scan: %w", err)
		}
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return out, nil
}

// Get returns one conversation's state, or ErrNotFound.
func (s *Store) Get(ctx context.Context, tenantID, conversationID string) (machine.State, error) {
	st, err := scanState(s.pool.QueryRow(ctx, `SELECT `+stateCols+` FROM lifecycle_conversations WHERE tenant_id = $1 AND conversation_id = $2`, tenantID, conversationID))
	if errors.Is(err, pgx.ErrNoRows) {
		return st, ErrNotFound
	}
	if err != nil {
		return st, fmt.Errorf("store: get: %w", err)
	}
	return st, nil
}

// LockStates returns and locks (FOR UPDATE, in key order so that concurrent
// writers cannot deadlock) the states of the given conversations that
// exist.
func (s *Store) LockStates(ctx context.Context, tx pgx.Tx, keys []Key) (map[Key]machine.State, error) {
	tenants := make([]string, len(keys))
	convs := make([]string, len(keys))
	for i, k := range keys {
		tenants[i], convs[i] = k.TenantID, k.ConversationID
	}
	rows, err := tx.Query(ctx, `SELECT `+stateCols+` FROM lifecycle_conversations
		WHERE (tenant_id, conversation_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
		ORDER BY tenant_id, conversation_id FOR UPDATE`, tenants, convs)
	if err != nil {
		return nil, fmt.Errorf("store: lock states: %w", err)
	}
	states, err := collectStates(rows)
	if err != nil {
		return nil, err
	}
	out := make(map[Key]machine.State, len(states))
	for _, st := range states {
		out[Key{st.TenantID, st.ConversationID}] = st
	}
	return out, nil
}

// LockOne returns and locks one conversation's state, or ErrNotFound.
func (s *Store) LockOne(ctx context.Context, tx pgx.Tx, tenantID, conversationID string) (machine.State, error) {
	st, err := scanState(tx.QueryRow(ctx, `SELECT `+stateCols+` FROM lifecycle_conversations WHERE tenant_id = $1 AND conversation_id = $2 FOR UPDATE`, tenantID, conversationID))
	if errors.Is(err, pgx.ErrNoRows) {
		return st, ErrNotFound
	}
	if err != nil {
		return st, fmt.Errorf("store: lock: %w", err)
	}
	return st, nil
}

// LockDueStale locks up to limit active conversations whose session timeout
// has passed at now, oldest first. Rows another transaction holds are
// skipped (the next sweep gets them).
func (s *Store) LockDueStale(ctx context.Context, tx pgx.Tx, now time.Time, limit int) ([]machine.State, error) {
	rows, err := tx.Query(ctx, `SELECT `+stateCols+` FROM lifecycle_conversations
		WHERE status = 'active' AND stale_at <= $1 ORDER BY stale_at LIMIT $2 FOR UPDATE SKIP LOCKED`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("store: due stale: %w", err)
	}
	return collectStates(rows)
}

// LockIdle locks up to limit of a tenant's active conversations idle since
// before cutoff (idleSince).
func (s *Store) LockIdle(ctx context.Context, tx pgx.Tx, tenantID string, cutoff time.Time, limit int) ([]machine.State, error) {
	rows, err := tx.Query(ctx, `SELECT `+stateCols+` FROM lifecycle_conversations
		WHERE tenant_id = $1 AND status = 'active' AND `+idleSince+` < $2 ORDER BY `+idleSince+` LIMIT $3 FOR UPDATE SKIP LOCKED`, tenantID, cutoff, limit)
	if err != nil {
		return nil, fmt.Errorf("store: idle: %w", err)
	}
	return collectStates(rows)
}

// LockDueNoResponse locks up to limit active conversations whose handoff
// request, made at or before cutoff, no agent has answered.
func (s *Store) LockDueNoResponse(ctx context.Context, tx pgx.Tx, cutoff time.Time, limit int) ([]machine.State, error) {
	rows, err := tx.Query(ctx, `SELECT `+stateCols+` FROM lifecycle_conversations
		WHERE awaiting_agent AND status = 'active' AND handoff_requested_at <= $1 ORDER BY handoff_requested_at LIMIT $2 FOR UPDATE SKIP LOCKED`, cutoff, limit)
	if err != nil {
		return nil, fmt.Errorf("store: due no-response: %w", err)
	}
	return collectStates(rows)
}

// OutboxRow is one pending effect: an event to publish and/or an entry for
// the ended-conversations view.
type OutboxRow struct {
	ID             int64
	TenantID       string
	ConversationID string
	Kind           string
	EventID        string
	// Envelope is the serialized event; nil for a view update only.
	Envelope []byte
	// CauseRecordedAt is when the causing event was recorded (zero for
	// sweeps and API calls).
	CauseRecordedAt time.Time
	// ViewEndedAt is set when the view must record the conversation as ended.
	ViewEndedAt   time.Time
	ViewEndReason eventv1.EndReason
}

// Change is what one transaction writes.
type Change struct {
	States []machine.State
	Outbox []OutboxRow
	// Position is the highest stream sequence the consumer applied (0:
	// unchanged).
	Position uint64
}

// outboxSQL inserts many outbox rows in one statement; ids follow the order
// of the arrays (the relay publishes in id order).
const outboxSQL = `INSERT INTO lifecycle_outbox (tenant_id, conversation_id, kind, event_id, envelope, cause_recorded_at, view_ended_at, view_end_reason)
	SELECT tenant_id, conversation_id, kind, event_id, envelope, cause_recorded_at, view_ended_at, view_end_reason
	FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::timestamptz[], $7::timestamptz[], $8::text[])
		WITH ORDINALITY AS u(tenant_id, conversation_id, kind, event_id, envelope, cause_recorded_at, view_ended_at, view_end_reason, ord)
	ORDER BY ord`

// Save writes a change in tx: states (with their stale_at), outbox rows and
// the consumer position, one statement each, sent together in one round
// trip. c.States must hold each conversation at most once.
func (s *Store) Save(ctx context.Context, tx pgx.Tx, c Change) error {
	b := &pgx.Batch{}
	if len(c.States) > 0 {
		b.Queue(upsertSQL, append(stateArrays(c.States), s.defaultTimeout)...)
	}
	if len(c.Outbox) > 0 {
		k := len(c.Outbox)
		tenant, conv, kind, eventID := make([]string, k), make([]string, k), make([]string, k), make([]string, k)
		envelope := make([][]byte, k)
		cause, viewAt := make([]*time.Time, k), make([]*time.Time, k)
		reason := make([]*string, k)
		for i, r := range c.Outbox {
			tenant[i], conv[i], kind[i], eventID[i], envelope[i] = r.TenantID, r.ConversationID, r.Kind, r.EventID, r.Envelope
			cause[i], viewAt[i] = timePtr(r.CauseRecordedAt), timePtr(r.ViewEndedAt)
			if !r.ViewEndedAt.IsZero() {
				name := r.ViewEndReason.String()
				reason[i] = &name
			}
		}
		b.Queue(outboxSQL, tenant, conv, kind, eventID, envelope, cause, viewAt, reason)
	}
	if c.Position > 0 {
		b.Queue(`INSERT INTO lifecycle_position (stream, applied_seq) VALUES ('PARLEY_CONV', $1)
			ON CONFLICT (stream) DO UPDATE SET applied_seq = GREATEST(lifecycle_position.applied_seq, EXCLUDED.applied_seq), updated_at = now()`, int64(c.Position))
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("store: save: %w", err)
	}
	return nil
}

// Position is the highest stream sequence the consumer committed (0 for an
// empty database).
func (s *Store) Position(ctx context.Context) (uint64, error) {
	var seq int64
	err := s.pool.QueryRow(ctx, `SELECT applied_seq FROM lifecycle_position WHERE stream = 'PARLEY_CONV'`).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: position: %w", err)
	}
	return uint64(seq), nil
}

// PendingOutbox returns up to limit outbox rows, oldest first.
func (s *Store) PendingOutbox(ctx context.Context, limit int) ([]OutboxRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, tenant_id, conversation_id, kind, event_id, envelope, cause_recorded_at, view_ended_at, view_end_reason
		FROM lifecycle_outbox ORDER BY id LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("store: outbox: %w", err)
	}
	defer rows.Close()
	var out []OutboxRow
	for rows.Next() {
		var (
			r             OutboxRow
			cause, viewAt *time.Time
			reason        *string
		)
		if err := rows.Scan(&r.ID, &r.TenantID, &r.ConversationID, &r.Kind, &r.EventID, &r.Envelope, &cause, &viewAt, &reason); err != nil {
			return nil, fmt.Errorf("store: outbox scan: %w", err)
		}
		r.CauseRecordedAt, r.ViewEndedAt = timeOf(cause), timeOf(viewAt)
		if reason != nil {
			r.ViewEndReason = eventv1.EndReason(eventv1.EndReason_value[*reason])
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: outbox: %w", err)
	}
	return out, nil
}

// DeleteOutbox removes rows whose effects are done.
func (s *Store) DeleteOutbox(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM lifecycle_outbox WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("store: outbox delete: %w", err)
	}
	return nil
}

// Stats summarises a tenant's conversations.
type Stats struct {
	Active, Ended, WaitingForAgent uint64
	EndedByReason                  map[string]uint64
	ActiveByChannel                map[string]uint64
	// OldestActiveAt is the earliest start of an active conversation;
	// LongestIdleSince the earliest last activity. Zero without active ones.
	OldestActiveAt, LongestIdleSince time.Time
}

// Stats counts a tenant's conversations.
func (s *Store) Stats(ctx context.Context, tenantID string) (Stats, error) {
	st := Stats{EndedByReason: map[string]uint64{}, ActiveByChannel: map[string]uint64{}}
	rows, err := s.pool.Query(ctx, `SELECT channel, count(*), count(*) FILTER (WHERE awaiting_agent), min(started_at), min(last_activity_at)
		FROM lifecycle_conversations WHERE tenant_id = $1 AND status = 'active' GROUP BY channel`, tenantID)
	if err != nil {
		return st, fmt.Errorf("store: stats: %w", err)
	}
	for rows.Next() {
		var (
			channel        string
			n, waiting     int64
			oldest, idlest time.Time
		)
		if err := rows.Scan(&channel, &n, &waiting, &oldest, &idlest); err != nil {
			rows.Close()
			return st, fmt.Errorf("store: stats: %w", err)
		}
		st.Active += uint64(n)
		st.WaitingForAgent += uint64(waiting)
		st.ActiveByChannel[channel] = uint64(n)
		if st.OldestActiveAt.IsZero() || oldest.Before(st.OldestActiveAt) {
			st.OldestActiveAt = oldest.UTC()
		}
		if st.LongestIdleSince.IsZero() || idlest.Before(st.LongestIdleSince) {
			st.LongestIdleSince = idlest.UTC()
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("store: stats: %w", err)
	}
	rows, err = s.pool.Query(ctx, `SELECT COALESCE(end_reason, 'END_REASON_UNSPECIFIED'), count(*)
		FROM lifecycle_conversations WHERE tenant_id = $1 AND status = 'ended' GROUP BY 1`, tenantID)
	if err != nil {
		return st, fmt.Errorf("store: stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			reason string
			n      int64
		)
		if err := rows.Scan(&reason, &n); err != nil {
			return st, fmt.Errorf("store: stats: %w", err)
		}
		st.Ended += uint64(n)
		st.EndedByReason[reason] = uint64(n)
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("store: stats: %w", err)
	}
	return st, nil
}

// AllChannels is the channel value of a timeout that applies to every
// channel (of a tenant, or of the service).
const AllChannels = "*"

// ServiceTenant is the tenant value of the service-wide channel defaults.
const ServiceTenant = "*"

// Timeout is one session timeout setting.
type Timeout struct {
	// Channel is a Channel enum name, or AllChannels.
	Channel string
	Timeout time.Duration
}

// Timeouts lists the settings of a tenant (ServiceTenant for the
// service-wide channel defaults), sorted by channel.
func (s *Store) Timeouts(ctx context.Context, tenantID string) ([]Timeout, error) {
	rows, err := s.pool.Query(ctx, `SELECT channel, timeout_seconds FROM lifecycle_session_timeouts WHERE tenant_id = $1 ORDER BY channel`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store: timeouts: %w", err)
	}
	defer rows.Close()
	var out []Timeout
	for rows.Next() {
		var (
			t    Timeout
			secs int32
		)
		if err := rows.Scan(&t.Channel, &secs); err != nil {
			return nil, fmt.Errorf("store: timeouts: %w", err)
		}
		t.Timeout = time.Duration(secs) * time.Second
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: timeouts: %w", err)
	}
	return out, nil
}

// SetTimeout sets (timeout > 0) or removes (timeout 0) a tenant's session
// timeout for a channel (or AllChannels), and reschedules the tenant's
// active conversations it affects, in one transaction.
func (s *Store) SetTimeout(ctx context.Context, tenantID, channel string, timeout time.Duration) error {
	return s.Tx(ctx, func(tx pgx.Tx) error {
		var err error
		if timeout > 0 {
			_, err = tx.Exec(ctx, `INSERT INTO lifecycle_session_timeouts (tenant_id, channel, timeout_seconds) VALUES ($1, $2, $3)
				ON CONFLICT (tenant_id, channel) DO UPDATE SET timeout_seconds = EXCLUDED.timeout_seconds, updated_at = now()`, tenantID, channel, seconds(timeout))
		} else {
			_, err = tx.Exec(ctx, `DELETE FROM lifecycle_session_timeouts WHERE tenant_id = $1 AND channel = $2`, tenantID, channel)
		}
		if err != nil {
			return fmt.Errorf("store: set timeout: %w", err)
		}
		q := `UPDATE lifecycle_conversations SET stale_at = ` + idleSince + ` + make_interval(secs => lifecycle_session_timeout(tenant_id, channel, $2))
			WHERE tenant_id = $1 AND status = 'active'`
		args := []any{tenantID, s.defaultTimeout}
		if channel != AllChannels {
			q += ` AND channel = $3`
			args = append(args, channel)
		}
		if _, err := tx.Exec(ctx, q, args...); err != nil {
			return fmt.Errorf("store: reschedule: %w", err)
		}
		return nil
	})
}

// SyncDefaults stores the service-wide per-channel defaults (channel enum
// name → timeout) and, when they or the default timeout changed since the
// last start, reschedules every active conversation. It returns whether it
// rescheduled.
func (s *Store) SyncDefaults(ctx context.Context, channelDefaults map[string]time.Duration) (bool, error) {
	keys := make([]string, 0, len(channelDefaults))
	for ch := range channelDefaults {
		keys = append(keys, ch)
	}
	sort.Strings(keys)
	fp := "default=" + strconv.Itoa(int(s.defaultTimeout))
	for _, ch := range keys {
		fp += ";" + ch + "=" + strconv.Itoa(int(seconds(channelDefaults[ch])))
	}
	changed := false
	err := s.Tx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE lifecycle_meta IN EXCLUSIVE MODE`); err != nil {
			return err
		}
		var old string
		err := tx.QueryRow(ctx, `SELECT value FROM lifecycle_meta WHERE key = 'session_timeouts'`).Scan(&old)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if old == fp {
			return nil
		}
		changed = true
		if _, err := tx.Exec(ctx, `DELETE FROM lifecycle_session_timeouts WHERE tenant_id = $1`, ServiceTenant); err != nil {
			return err
		}
		for _, ch := range keys {
			if _, err := tx.Exec(ctx, `INSERT INTO lifecycle_session_timeouts (tenant_id, channel, timeout_seconds) VALUES ($1, $2, $3)`,
				ServiceTenant, ch, seconds(channelDefaults[ch])); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE lifecycle_conversations SET stale_at = `+idleSince+` + make_interval(secs => lifecycle_session_timeout(tenant_id, channel, $1))
			WHERE status = 'active'`, s.defaultTimeout); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO lifecycle_meta (key, value) VALUES ('session_timeouts', $1) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value`, fp)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store: sync session timeouts: %w", err)
	}
	return changed, nil
}

func seconds(d time.Duration) int32 {
	s := d / time.Second
	if s < 1 {
		s = 1
	}
	if s > 1<<31-1 {
		s = 1<<31 - 1
	}
	return int32(s)
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func enumPtr(v int32, name string) *string {
	if v == 0 {
		return nil
	}
	return &name
}

func timeOf(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
