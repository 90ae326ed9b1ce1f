package projector

import (
	"context"
	"time"

	"github.com/parley-dev/parley/services/reporting/internal/search"
)

// The message_tokens table is full-text search's index: one row per
// distinct word of each message (search.Tokens, the normaliser the filter
// uses too) on the message's UTC day.

const tokenColumns = `tenant_id, token, day, conversation_id`

type tokenCols struct {
	TenantID, Token []string
	Day             []time.Time
	ConversationID  []string
}

func (c *tokenCols) add(m *MessageRow) {
	day := m.OccurredAt.UTC().Truncate(24 * time.Hour)
	for _, t := range search.Tokens(m.Text) {
		c.TenantID = append(c.TenantID, m.TenantID)
		c.Token = append(c.Token, t)
		c.Day = append(c.Day, day)
		c.ConversationID = append(c.ConversationID, m.ConversationID)
	}
}

func (c *tokenCols) columns() []any { return []any{c.TenantID, c.Token, c.Day, c.ConversationID} }

// insertTokens indexes the words of the batch's messages.
func (p *Projector) insertTokens(ctx context.Context, c *tokenCols, msgs []MessageRow) error {
	defer truncate(c)
	for i := range msgs {
		c.add(&msgs[i])
	}
	return p.insert(ctx, p.tables.MessageTokens, tokenColumns, len(c.Token), c.columns())
}
