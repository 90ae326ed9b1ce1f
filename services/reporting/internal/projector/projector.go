package projector

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/parley-dev/parley/libs/eventbus"
)

// Durable is the projector's consumer name on PARLEY_CONV.
const Durable = "reporting-projector"

// Projector writes batches of events to ClickHouse.
type Projector struct {
	conn driver.Conn
	log  *slog.Logger
}

// New returns a projector writing through conn.
func New(conn driver.Conn, log *slog.Logger) *Projector { return &Projector{conn: conn, log: log} }

// Handle is an eventbus.Handler: it inserts the batch's rows and returns only
// after ClickHouse confirmed every insert.
func (p *Projector) Handle(ctx context.Context, batch []*eventbus.Delivery) error {
	var rows Rows
	for _, d := range batch {
		traceID := ""
		if d.SpanContext.IsValid() {
			traceID = d.SpanContext.TraceID().String()
		}
		rows.Add(d.Envelope, d.StreamSeq, traceID)
	}
	if err := p.insertEvents(ctx, rows.Events); err != nil {
		return err
	}
	return p.insertMessages(ctx, rows.Messages)
}

func (p *Projector) insertEvents(ctx context.Context, rows []EventRow) error {
	if len(rows) == 0 {
		return nil
	}
	b, err := p.conn.PrepareBatch(ctx, `INSERT INTO events (tenant_id, conversation_id, event_id, kind, stream_seq, occurred_at, occurred_at_us, recorded_at, producer, causation_id, correlation_id, trace_id, payload_json)`)
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
	b, err := p.conn.PrepareBatch(ctx, `INSERT INTO messages (tenant_id, conversation_id, event_id, message_id, role, text, intent, intent_confidence, unidentified, flow_id, node_id, agent_id, response_time_ms, paid, occurred_at, occurred_at_us, recorded_at, stream_seq, trace_id)`)
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
