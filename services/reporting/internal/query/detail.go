package query

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"

	"github.com/parley-dev/parley/services/reporting/internal/convrow"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
	"google.golang.org/protobuf/encoding/protojson"
)

// Detail is everything the conversations row holds about one conversation:
// the list's summary and the whole row.
type Detail struct {
	Summary
	Row *convstate.State
}

// Conversation returns the conversations row of one conversation, or
// ErrNotFound. It reads every column of the row (convrow).
func (r *Reader) Conversation(ctx context.Context, tenant, conversation string) (*Detail, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	st, err := convrow.Scan(r.conn.QueryRow(ctx, `SELECT `+convrow.Names()+`
		FROM conversations FINAL WHERE tenant_id = ? AND conversation_id = ?`, tenant, conversation))
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("query: conversation: %w", err)
	}
	return &Detail{Summary: summaryOf(st), Row: st}, nil
}

// summaryOf is the list's view of a row.
func summaryOf(s *convstate.State) Summary {
	return Summary{
		ConversationID: s.ConversationID, BotID: s.BotID, Channel: s.Channel, Platform: s.Platform, Type: s.Type,
		VisitorToken: s.VisitorToken, VisitorName: s.VisitorName,
		StartedAt: s.StartedAt, LastActivityAt: s.LastActivityAt, EndedAt: s.EndedAt, StartedAtUS: s.StartedAt.UnixMicro(),
		Status: s.Status, EndReason: s.EndReason, Engagement: s.Engagement, Resolved: s.Resolved,
		MessageCount: s.MessageCount(), UnidentifiedCount: s.UnidentifiedCount, LastMessageText: s.LastMessageText,
		Tags: s.Tags, Labels: s.Labels, Goals: s.Goals, Flagged: s.Flagged, TakenOver: s.TakenOver,
		OperatorNoResponse: s.OperatorNoResponse, AgentName: s.AgentName, Country: s.Country, Region: s.Region, City: s.City,
		Leads: s.Leads,
	}
}

// MaxDetailEvents bounds the debug traces and the leads Facts returns (each).
const MaxDetailEvents = 1000

// Facts are the events of a conversation that its detail lists one by one.
type Facts struct {
	DebugTraces []DebugTrace
	Leads       []Lead
}

// DebugTrace is one debug_trace event.
type DebugTrace struct {
	OccurredAt time.Time
	Trace      *eventv1.DebugTrace
}

// Lead is one lead_captured event; ConversationID is set where leads of
// several conversations are listed (a visitor's).
type Lead struct {
	ConversationID string
	OccurredAt     time.Time
	Lead           *eventv1.LeadCaptured
}

// Facts reads a conversation's debug traces and leads from the events
// table, oldest first, up to MaxDetailEvents of each.
func (r *Reader) Facts(ctx context.Context, tenant, conversation string) (*Facts, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	rows, err := r.conn.Query(ctx, `SELECT kind, occurred_at_us, payload_json FROM events FINAL
		WHERE tenant_id = ? AND conversation_id = ? AND kind IN ('debug_trace', 'lead_captured')
		ORDER BY kind, occurred_at_us, stream_seq LIMIT ? BY kind`, tenant, conversation, MaxDetailEvents)
	if err != nil {
		return nil, fmt.Errorf("query: facts: %w", err)
	}
	defer rows.Close()
	f := &Facts{}
	opts := protojson.UnmarshalOptions{DiscardUnknown: true}
	for rows.Next() {
		var kind, payload string
		var us int64
		if err := rows.Scan(&kind, &us, &payload); err != nil {
			return nil, fmt.Errorf("query: facts row: %w", err)
		}
		at := time.UnixMicro(us).UTC()
		switch kind {
		case "debug_trace":
			t := &eventv1.DebugTrace{}
			if err := opts.Unmarshal([]byte(payload), t); err != nil {
				return nil, fmt.Errorf("query: debug trace: %w", err)
			}
			f.DebugTraces = append(f.DebugTraces, DebugTrace{OccurredAt: at, Trace: t})
		case "lead_captured":
			l := &eventv1.LeadCaptured{}
			if err := opts.Unmarshal([]byte(payload), l); err != nil {
				return nil, fmt.Errorf("query: lead: %w", err)
			}
			f.Leads = append(f.Leads, Lead{OccurredAt: at, Lead: l})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query: facts: %w", err)
	}
	return f, nil
}
