// Package query reads conversations from the ClickHouse projections. Every
// query is parameterised and scoped to one tenant.
package query

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// ErrNotFound means the tenant has no such conversation.
var ErrNotFound = errors.New("query: conversation not found")

// Message is one transcript line.
type Message struct {
	EventID, MessageID, Role, Text, Intent string
	IntentConfidence                       float32
	Unidentified                           bool
	FlowID, NodeID, AgentID                string
	ResponseTimeMS                         uint32
	OccurredAt                             time.Time
	TraceID                                string
}

// Transcript is a conversation's messages in order, with what the event log
// knows about it.
type Transcript struct {
	ConversationID string
	Messages       []Message
	FirstEventAt   time.Time
	LastEventAt    time.Time
	EventCount     uint64
	TraceIDs       []string
}

// Reader runs queries.
type Reader struct {
	conn    driver.Conn
	timeout time.Duration
}

// NewReader returns a reader; timeout bounds each query.
func NewReader(conn driver.Conn, timeout time.Duration) *Reader {
	return &Reader{conn: conn, timeout: timeout}
}

// MaxTranscript bounds the messages returned for one conversation.
const MaxTranscript = 10000

// Transcript returns one conversation's messages in order.
func (r *Reader) Transcript(ctx context.Context, tenant, conversation string) (*Transcript, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	t := &Transcript{ConversationID: conversation}
	var first, last int64
	row := r.conn.QueryRow(ctx, `SELECT count(), min(occurred_at_us), max(occurred_at_us), groupUniqArray(trace_id)
		FROM events FINAL WHERE tenant_id = ? AND conversation_id = ?`, tenant, conversation)
	if err := row.Scan(&t.EventCount, &first, &last, &t.TraceIDs); err != nil {
		return nil, fmt.Errorf("query: conversation: %w", err)
	}
	if t.EventCount == 0 {
		return nil, ErrNotFound
	}
	t.FirstEventAt, t.LastEventAt = time.UnixMicro(first).UTC(), time.UnixMicro(last).UTC()
	trace := t.TraceIDs[:0]
	for _, id := range t.TraceIDs {
		if id != "" {
			trace = append(trace, id)
		}
	}
	t.TraceIDs = trace

	rows, err := r.conn.Query(ctx, `SELECT event_id, message_id, toString(role), text, intent, intent_confidence, unidentified,
			flow_id, node_id, agent_id, response_time_ms, occurred_at_us, trace_id
		FROM messages FINAL
		WHERE tenant_id = ? AND conversation_id = ?
		ORDER BY occurred_at_us, stream_seq
		LIMIT ?`, tenant, conversation, MaxTranscript)
	if err != nil {
		return nil, fmt.Errorf("query: transcript: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m Message
		var unidentified uint8
		var at int64
		if err := rows.Scan(&m.EventID, &m.MessageID, &m.Role, &m.Text, &m.Intent, &m.IntentConfidence, &unidentified,
			&m.FlowID, &m.NodeID, &m.AgentID, &m.ResponseTimeMS, &at, &m.TraceID); err != nil {
			return nil, fmt.Errorf("query: transcript row: %w", err)
		}
		m.Unidentified = unidentified == 1
		m.OccurredAt = time.UnixMicro(at).UTC()
		t.Messages = append(t.Messages, m)
	}
	return t, rows.Err()
}
