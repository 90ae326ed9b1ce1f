package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"google.golang.org/protobuf/proto"
)

// detectorPrefix prefixes the rule id under which tagging records a
// built-in detector's tag (docs/events.md: IssueDetected.detector).
const detectorPrefix = "builtin:"

// readTagging reads tagging's facts (tagging_conversations) and tags in
// effect (tagging_applied) of the tenant's conversations.
func (t *tenantExp) readTagging(ctx context.Context, pool *pgxpool.Pool) error {
	for _, c := range t.convs {
		c.tgKnown, c.tgCounts, c.tgEnded, c.tgReason, c.tgTags, c.tgIssues = false, taggingCounts{}, false, "", nil, nil
	}
	rows, err := pool.Query(ctx, `SELECT conversation_id, facts FROM tagging_conversations WHERE tenant_id = $1`, t.tenant)
	if err != nil {
		return fmt.Errorf("verify: tagging_conversations: %w", err)
	}
	defer rows.Close()
	var facts taggingv1.RuleConversation
	for rows.Next() {
		var id string
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			return fmt.Errorf("verify: tagging_conversations: %w", err)
		}
		c := t.convs[id]
		if c == nil {
			continue
		}
		if err := proto.Unmarshal(data, &facts); err != nil {
			return fmt.Errorf("verify: tagging_conversations %s/%s: undecodable facts: %w", t.tenant, id, err)
		}
		c.tgKnown = true
		c.tgCounts = taggingCounts{Events: int(facts.GetEvents()), VisitorMessages: int(facts.GetVisitorMessages()),
			BotMessages: int(facts.GetBotMessages()), AgentMessages: int(facts.GetAgentMessages())}
		c.tgEnded, c.tgReason = facts.GetEnded(), facts.GetEndReason()
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify: tagging_conversations: %w", err)
	}
	rows.Close()

	tags, err := pool.Query(ctx, `SELECT conversation_id, rule_id, tag FROM tagging_applied WHERE tenant_id = $1`, t.tenant)
	if err != nil {
		return fmt.Errorf("verify: tagging_applied: %w", err)
	}
	defer tags.Close()
	held, issues := map[*convState]map[string]bool{}, map[*convState]map[string]bool{}
	add := func(m map[*convState]map[string]bool, c *convState, v string) {
		if m[c] == nil {
			m[c] = map[string]bool{}
		}
		m[c][v] = true
	}
	for tags.Next() {
		var id, rule, tag string
		if err := tags.Scan(&id, &rule, &tag); err != nil {
			return fmt.Errorf("verify: tagging_applied: %w", err)
		}
		c := t.convs[id]
		if c == nil {
			continue
		}
		add(held, c, tag)
		if d, ok := strings.CutPrefix(rule, detectorPrefix); ok && d == tag {
			add(issues, c, tag)
		}
	}
	if err := tags.Err(); err != nil {
		return fmt.Errorf("verify: tagging_applied: %w", err)
	}
	for c, m := range held {
		c.tgTags = sortedSet(m)
	}
	for c, m := range issues {
		c.tgIssues = sortedSet(m)
	}
	return nil
}
