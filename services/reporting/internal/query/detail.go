package query

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/parley-dev/parley/services/reporting/internal/convrow"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
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
