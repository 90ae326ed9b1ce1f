// Package query reads conversations from the ClickHouse projections. Every
// query is parameterised and scoped to one tenant.
package query

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
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
	StreamSeq                              uint64
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
	// Next is where the next page starts (nil on the last page).
	Next *MessageCursor
}

// MessageCursor is a position in a transcript: the last message of a page.
type MessageCursor struct {
	OccurredAtUS int64
	StreamSeq    uint64
}

// Encode renders the cursor as an opaque page token.
func (c MessageCursor) Encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte("m1:" + strconv.FormatInt(c.OccurredAtUS, 10) + ":" + strconv.FormatUint(c.StreamSeq, 10)))
}

// DecodeMessageCursor parses a transcript page token.
func DecodeMessageCursor(token string) (MessageCursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return MessageCursor{}, ErrBadCursor
	}
	parts := strings.Split(string(raw), ":")
	if len(parts) != 3 || parts[0] != "m1" {
		return MessageCursor{}, ErrBadCursor
	}
	us, err1 := strconv.ParseInt(parts[1], 10, 64)
	seq, err2 := strconv.ParseUint(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return MessageCursor{}, ErrBadCursor
	}
	return MessageCursor{OccurredAtUS: us, StreamSeq: seq}, nil
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

// Transcript returns one page of a conversation's messages in order: up to
// size messages after the cursor (from the start when nil).
func (r *Reader) Transcript(ctx context.Context, tenant, conversation string, size int, after *MessageCursor) (*Transcript, error) {
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

	where, args := "tenant_id = ? AND conversation_id = ?", []any{tenant, conversation}
	if after != nil {
		where += " AND (occurred_at_us > ? OR (occurred_at_us = ? AND stream_seq > ?))"
		args = append(args, after.OccurredAtUS, after.OccurredAtUS, after.StreamSeq)
	}
	rows, err := r.conn.Query(ctx, `SELECT event_id, message_id, toString(role), text, intent, intent_confidence, unidentified,
			flow_id, node_id, agent_id, response_time_ms, occurred_at_us, trace_id, stream_seq
		FROM messages FINAL
		WHERE `+where+`
		ORDER BY occurred_at_us, stream_seq
		LIMIT ?`, append(args, size+1)...)
	if err != nil {
		return nil, fmt.Errorf("query: transcript: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m Message
		var unidentified uint8
		var at int64
		if err := rows.Scan(&m.EventID, &m.MessageID, &m.Role, &m.Text, &m.Intent, &m.IntentConfidence, &unidentified,
			&m.FlowID, &m.NodeID, &m.AgentID, &m.ResponseTimeMS, &at, &m.TraceID, &m.StreamSeq); err != nil {
			return nil, fmt.Errorf("query: transcript row: %w", err)
		}
		m.Unidentified = unidentified == 1
		m.OccurredAt = time.UnixMicro(at).UTC()
		t.Messages = append(t.Messages, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query: transcript: %w", err)
	}
	if len(t.Messages) > size {
		t.Messages = t.Messages[:size]
		last := t.Messages[size-1]
		t.Next = &MessageCursor{OccurredAtUS: last.OccurredAt.UnixMicro(), StreamSeq: last.StreamSeq}
	}
	return t, nil
}
