package projector

import "github.com/parley-dev/parley/services/reporting/internal/convstate"

// The visitor_conversations table is the visitor's access path: one row per
// conversation with a visitor token (written when a conversation_started
// is applied) with its start, so GetVisitor and the visitor filter read the
// conversations of one visitor by key.

const visitorColumns = `tenant_id, visitor_token, started_at_us, conversation_id`

type visitorCols struct {
	TenantID, VisitorToken []string
	StartedAtUS            []int64
	ConversationID         []string
}

// add adds st's row when it has a visitor token.
func (c *visitorCols) add(st *convstate.State) {
	if st.VisitorToken == "" {
		return
	}
	c.TenantID = append(c.TenantID, st.TenantID)
	c.VisitorToken = append(c.VisitorToken, st.VisitorToken)
	c.StartedAtUS = append(c.StartedAtUS, st.StartedAt.UnixMicro())
	c.ConversationID = append(c.ConversationID, st.ConversationID)
}

func (c *visitorCols) columns() []any {
	return []any{c.TenantID, c.VisitorToken, c.StartedAtUS, c.ConversationID}
}
