package query

import (
	"context"
	"fmt"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/reporting/internal/filter"
	"google.golang.org/protobuf/encoding/protojson"
)

// Visitor is what the conversations of one visitor token tell.
type Visitor struct {
	Token, DisplayName       string
	FirstSeen, LastSeen      time.Time
	Conversations, LeadCount uint64
	Leads                    []Lead
	Variables                map[string]string
}

// MaxVisitorLeads bounds the lead records a visitor answer carries (the
// count stays exact).
const MaxVisitorLeads = 100

// Visitor returns the tenant's visitor with this token, or ErrNotFound.
func (r *Reader) Visitor(ctx context.Context, tenant, token string) (*Visitor, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	v := &Visitor{Token: token, Variables: map[string]string{}}
	var first int64
	// The visitor's conversations, read by key (filter.VisitorSQL).
	visitorSQL, visitorArgs := filter.VisitorSQL(tenant, token)
	args := append([]any{tenant}, visitorArgs...)
	err := r.conn.QueryRow(ctx, `SELECT count(), min(started_at_us), max(greatest(last_activity_at, started_at)), sum(leads),
			argMaxIf(visitor_name, started_at_us, visitor_name != '')
		FROM conversations FINAL WHERE tenant_id = ? AND `+visitorSQL, args...).
		Scan(&v.Conversations, &first, &v.LastSeen, &v.LeadCount, &v.DisplayName)
	if err != nil {
		return nil, fmt.Errorf("query: visitor: %w", err)
	}
	if v.Conversations == 0 {
		return nil, ErrNotFound
	}
	v.FirstSeen, v.LastSeen = time.UnixMicro(first).UTC(), v.LastSeen.UTC()

	// Latest value per key: the newest conversation that set the key wins.
	rows, err := r.conn.Query(ctx, `SELECT k, argMax(val, started_at_us) FROM (
			SELECT started_at_us, variable_keys, variable_values FROM conversations FINAL
			WHERE tenant_id = ? AND `+visitorSQL+`)
		ARRAY JOIN variable_keys AS k, variable_values AS val
		GROUP BY k`, args...)
	if err != nil {
		return nil, fmt.Errorf("query: visitor variables: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, val string
		if err := rows.Scan(&k, &val); err != nil {
			return nil, fmt.Errorf("query: visitor variable: %w", err)
		}
		v.Variables[k] = val
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query: visitor variables: %w", err)
	}
	if v.LeadCount > 0 {
		if v.Leads, err = r.visitorLeads(ctx, tenant, token); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// visitorLeads reads the LeadCaptured events of the visitor's
// conversations (visitor_conversations names them; the events table is
// keyed by conversation), oldest first.
func (r *Reader) visitorLeads(ctx context.Context, tenant, token string) ([]Lead, error) {
	rows, err := r.conn.Query(ctx, `SELECT conversation_id, any(occurred_at_us) AS lead_at, any(payload_json) FROM events
		WHERE tenant_id = ? AND kind = 'lead_captured' AND conversation_id IN (
			SELECT conversation_id FROM visitor_conversations WHERE tenant_id = ? AND visitor_token = ?)
		GROUP BY conversation_id, event_id
		ORDER BY lead_at, conversation_id LIMIT ?`, tenant, tenant, token, MaxVisitorLeads)
	if err != nil {
		return nil, fmt.Errorf("query: visitor leads: %w", err)
	}
	defer rows.Close()
	var out []Lead
	for rows.Next() {
		var l Lead
		var at int64
		var payload string
		if err := rows.Scan(&l.ConversationID, &at, &payload); err != nil {
			return nil, fmt.Errorf("query: visitor lead: %w", err)
		}
		l.OccurredAt, l.Lead = time.UnixMicro(at).UTC(), &eventv1.LeadCaptured{}
		// A payload it cannot read still counts as a lead.
		_ = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal([]byte(payload), l.Lead)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query: visitor leads: %w", err)
	}
	return out, nil
}

// VisitorStats counts the distinct visitor tokens of the conversations
// matching w and those with more than one of them (returning visitors).
func (r *Reader) VisitorStats(ctx context.Context, w *filter.Where) (visitors, returning uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	err = r.conn.QueryRow(ctx, `SELECT count(), countIf(n > 1) FROM (
			SELECT visitor_token, count() AS n FROM conversations FINAL
			WHERE `+w.SQL+` AND visitor_token != '' GROUP BY visitor_token)`, w.Args...).Scan(&visitors, &returning)
	if err != nil {
		return 0, 0, fmt.Errorf("query: visitor stats: %w", err)
	}
	return visitors, returning, nil
}
