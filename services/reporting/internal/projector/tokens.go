package projector

import (
	"context"
	"time"

	"github.com/parley-dev/parley/services/reporting/internal/search"
)

// The message_tokens table is full-text search's index: one row per
// distinct word of each message (search.Tokens, the normaliser the filter
// uses too) with its conversation's start (UTC day and microseconds), so a
// search is bounded by the time range and finds conversations by key.

const tokenColumns = `tenant_id, token, day, started_at_us, conversation_id`

type tokenCols struct {
	TenantID, Token []string
	Day             []time.Time
	StartedAtUS     []int64
	ConversationID  []string
}

func (c *tokenCols) add(m *MessageRow, started time.Time) {
	day := started.UTC().Truncate(24 * time.Hour)
	for _, t := range search.Tokens(m.Text) {
		c.TenantID = append(c.TenantID, m.TenantID)
		c.Token = append(c.Token, t)
		c.Day = append(c.Day, day)
		c.StartedAtUS = append(c.StartedAtUS, started.UnixMicro())
		c.ConversationID = append(c.ConversationID, m.ConversationID)
	}
}

func (c *tokenCols) columns() []any {
	return []any{c.TenantID, c.Token, c.Day, c.StartedAtUS, c.ConversationID}
}

// insertTokens indexes the words of the batch's messages; started tells a
// conversation's start (its fold state's StartedAt).
func (p *Projector) insertTokens(ctx context.Context, c *tokenCols, msgs []MessageRow, started func(tenant, conversation string) time.Time) error {
	defer truncate(c)
	for i := range msgs {
		c.add(&msgs[i], started(msgs[i].TenantID, msgs[i].ConversationID))
	}
	return p.insert(ctx, p.tables.MessageTokens, tokenColumns, len(c.Token), c.columns())
}
