package projector

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
	"github.com/parley-dev/parley/services/reporting/internal/statestore"
)

// Durable is the projector's consumer name on PARLEY_CONV.
const Durable = "reporting-projector"

// Tables names the ClickHouse tables a projector writes.
type Tables struct{ Events, Messages, Conversations string }

// LiveTables are the tables readers query.
var LiveTables = Tables{Events: "events", Messages: "messages", Conversations: "conversations"}

// Suffixed returns the tables with a suffix, e.g. "_rebuild".
func (t Tables) Suffixed(suffix string) Tables {
	return Tables{Events: t.Events + suffix, Messages: t.Messages + suffix, Conversations: t.Conversations + suffix}
}

// Projector writes batches of events to ClickHouse.
type Projector struct {
	conn   driver.Conn
	states *statestore.Store
	tables Tables
	log    *slog.Logger
}

// New returns a projector writing through conn into tables, keeping fold
// states in states.
func New(conn driver.Conn, states *statestore.Store, tables Tables, log *slog.Logger) *Projector {
	return &Projector{conn: conn, states: states, tables: tables, log: log}
}

// Handle is an eventbus.Handler. It inserts the batch's events and messages,
// folds the batch into the conversations it touches and inserts their new
// states, then saves the fold states; it returns only after all of that is
// durable. A redelivered batch produces identical rows (same keys and
// versions), which ReplacingMergeTree collapses.
func (p *Projector) Handle(ctx context.Context, batch []*eventbus.Delivery) error {
	var rows Rows
	keys := make([]statestore.Key, 0, len(batch))
	seen := map[statestore.Key]bool{}
	for _, d := range batch {
		traceID := ""
		if d.SpanContext.IsValid() {
			traceID = d.SpanContext.TraceID().String()
		}
		rows.Add(d.Envelope, d.StreamSeq, traceID)
		k := statestore.Key{TenantID: d.Envelope.TenantId, ConversationID: d.Envelope.ConversationId}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	states, err := p.states.Load(ctx, keys)
	if err != nil {
		return err
	}
	var changed []*convstate.State
	dirty := map[statestore.Key]bool{}
	for _, d := range batch {
		k := statestore.Key{TenantID: d.Envelope.TenantId, ConversationID: d.Envelope.ConversationId}
		st := states[k]
		if st == nil {
			st = convstate.New(k.TenantID, k.ConversationID)
			states[k] = st
		}
		if st.Apply(d.Envelope, d.StreamSeq) && !dirty[k] {
			dirty[k] = true
			changed = append(changed, st)
		}
	}
	if err := p.insertEvents(ctx, rows.Events); err != nil {
		return err
	}
	if err := p.insertMessages(ctx, rows.Messages); err != nil {
		return err
	}
	if err := p.insertConversations(ctx, changed); err != nil {
		return err
	}
	return p.states.Save(ctx, changed)
}

func (p *Projector) insertConversations(ctx context.Context, states []*convstate.State) error {
	if len(states) == 0 {
		return nil
	}
	b, err := p.conn.PrepareBatch(ctx, `INSERT INTO `+p.tables.Conversations+` (`+ConversationColumns+`)`)
	if err != nil {
		return fmt.Errorf("projector: prepare conversations: %w", err)
	}
	for _, s := range states {
		if err := b.Append(ConversationValues(s)...); err != nil {
			_ = b.Abort()
			return fmt.Errorf("projector: append conversation: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("projector: insert conversations: %w", err)
	}
	return nil
}

// ConversationColumns lists the conversations table's columns in the order
// ConversationValues returns them.
const ConversationColumns = `tenant_id, conversation_id, started_at, started_at_us, last_activity_at, ended_at, status, end_reason, ended_by,
	bot_id, channel, platform, type, device_type, visitor_token, visitor_name, locale, country, region, city,
	start_page_url, referrer, page_urls, variable_keys, variable_values,
	message_count, visitor_messages, bot_messages, agent_messages, system_messages, unidentified_count, paid_messages,
	last_message_text, last_message_role, last_message_at, intents, nodes,
	flows_started, flows_completed, flow_steps, flow_drops, goals, goal_value_micros, leads, markers,
	handoff_requested, handoff_at, taken_over, takeover_at, agents, agent_name, operator_no_response,
	first_response_ms, response_ms_sum, response_count, max_response_ms, engagement, resolved,
	tags, labels, flagged, cost_micros, currency, input_tokens, output_tokens, event_count, version`

// ConversationValues is one conversations row.
func ConversationValues(s *convstate.State) []any {
	keys := make([]string, 0, len(s.Variables))
	for k := range s.Variables {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	vals := make([]string, len(keys))
	for i, k := range keys {
		vals[i] = s.Variables[k]
	}
	return []any{
		s.TenantID, s.ConversationID, chTime(s.StartedAt), s.StartedAt.UnixMicro(), chTime(s.LastActivityAt), chTime(s.EndedAt), s.Status, s.EndReason, s.EndedBy,
		s.BotID, s.Channel, s.Platform, s.Type, s.DeviceType, s.VisitorToken, s.VisitorName, s.Locale, s.Country, s.Region, s.City,
		s.StartPageURL, s.Referrer, nonNil(s.PageURLs), keys, vals,
		s.MessageCount(), s.VisitorMessages, s.BotMessages, s.AgentMessages, s.SystemMessages, s.UnidentifiedCount, s.PaidMessages,
		s.LastMessageText, s.LastMessageRole, chTime(s.LastMessageAt), nonNil(s.Intents), nonNil(s.Nodes),
		nonNil(s.FlowsStarted), nonNil(s.FlowsCompleted), nonNil(s.FlowSteps), nonNil(s.FlowDrops), nonNil(s.Goals), s.GoalValue, s.Leads, nonNil(s.Markers),
		b2u(s.HandoffRequested), chTime(s.HandoffAt), b2u(s.TakenOver), chTime(s.TakeoverAt), nonNil(s.Agents), s.AgentName, b2u(s.OperatorNoResponse),
		s.FirstResponseMS, s.ResponseMSSum, s.ResponseCount, s.MaxResponseMS, s.Engagement, b2u(s.Resolved),
		nonNil(s.Tags), nonNil(s.Labels), b2u(s.Flagged), s.CostMicros, s.Currency, s.InputTokens, s.OutputTokens, s.EventCount, s.LastSeq,
	}
}

// chTime maps the zero time to ClickHouse's zero DateTime.
func chTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Unix(0, 0).UTC()
	}
	return t
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (p *Projector) insertEvents(ctx context.Context, rows []EventRow) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := p.conn.PrepareBatch(ctx, `INSERT INTO `+p.tables.Events+` (tenant_id, conversation_id, event_id, kind, stream_seq, occurred_at, occurred_at_us, recorded_at, producer, causation_id, correlation_id, trace_id, payload_json)`)
	if err != nil {
		return fmt.Errorf("projector: prepare events: %w", err)
	}
	for _, r := range rows {
		if err := b.Append(r.TenantID, r.ConversationID, r.EventID, r.Kind, r.StreamSeq, r.OccurredAt, r.OccurredAtUS, r.RecordedAt, r.Producer, r.CausationID, r.CorrelationID, r.TraceID, r.PayloadJSON); err != nil {
			_ = b.Abort()
			return fmt.Errorf("projector: append event: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("projector: insert events: %w", err)
	}
	return nil
}

func (p *Projector) insertMessages(ctx context.Context, rows []MessageRow) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := p.conn.PrepareBatch(ctx, `INSERT INTO `+p.tables.Messages+` (tenant_id, conversation_id, event_id, message_id, role, text, intent, intent_confidence, unidentified, flow_id, node_id, agent_id, response_time_ms, paid, occurred_at, occurred_at_us, recorded_at, stream_seq, trace_id)`)
	if err != nil {
		return fmt.Errorf("projector: prepare messages: %w", err)
	}
	for _, r := range rows {
		if err := b.Append(r.TenantID, r.ConversationID, r.EventID, r.MessageID, r.Role, r.Text, r.Intent, r.IntentConfidence, r.Unidentified, r.FlowID, r.NodeID, r.AgentID, r.ResponseTimeMS, r.Paid, r.OccurredAt, r.OccurredAtUS, r.RecordedAt, r.StreamSeq, r.TraceID); err != nil {
			_ = b.Abort()
			return fmt.Errorf("projector: append message: %w", err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("projector: insert messages: %w", err)
	}
	return nil
}
