package query

import (
	"context"
	"fmt"
	"time"
)

// CatalogFlow is a flow seen in flow events or messages.
type CatalogFlow struct {
	FlowID, Name  string
	Conversations uint64
}

// CatalogNode is a node seen in messages or flow events.
type CatalogNode struct {
	NodeID, FlowID string
	HasPrompt      bool
	Conversations  uint64
}

// MaxCatalogItems bounds the flows and the nodes of one catalogue.
const MaxCatalogItems = 10000

// Catalog lists the flows and nodes of the tenant's events in [from, to)
// (to zero: unbounded), of one bot's conversations when bot is not empty.
// Flow names come from FlowStarted (the latest non-empty one); a node has
// a prompt when a bot message was posted from it.
func (r *Reader) Catalog(ctx context.Context, tenant, bot string, from, to time.Time) ([]CatalogFlow, []CatalogNode, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	cond, args := "tenant_id = ? AND occurred_at >= toDateTime(?)", []any{tenant, from.Unix()}
	if !to.IsZero() {
		cond += " AND occurred_at < toDateTime(?)"
		args = append(args, to.Unix())
	}
	if bot != "" {
		cond += " AND conversation_id IN (SELECT conversation_id FROM conversations WHERE tenant_id = ? AND bot_id = ?)"
		args = append(args, tenant, bot)
	}
	both := append(append([]any(nil), args...), args...) // the condition appears twice
	both = append(both, MaxCatalogItems)
	field := func(name string) string { return "visitParamExtractString(payload_json, '" + name + "')" }

	var flows []CatalogFlow
	rows, err := r.conn.Query(ctx, `SELECT flow, argMaxIf(name, at, name != ''), uniqExact(conversation_id) FROM (
			SELECT `+field("flow_id")+` AS flow, `+field("flow_name")+` AS name, occurred_at_us AS at, conversation_id FROM events
			WHERE `+cond+` AND kind IN ('flow_started', 'flow_step', 'flow_completed', 'flow_dropped')
			UNION ALL
			SELECT flow_id, '', occurred_at_us, conversation_id FROM messages WHERE `+cond+` AND flow_id != '')
		WHERE flow != '' GROUP BY flow ORDER BY flow LIMIT ?`, both...)
	if err != nil {
		return nil, nil, fmt.Errorf("query: catalog flows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f CatalogFlow
		if err := rows.Scan(&f.FlowID, &f.Name, &f.Conversations); err != nil {
			return nil, nil, fmt.Errorf("query: catalog flow: %w", err)
		}
		flows = append(flows, f)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("query: catalog flows: %w", err)
	}

	var nodes []CatalogNode
	nrows, err := r.conn.Query(ctx, `SELECT node, flow, max(prompt), uniqExact(conversation_id) FROM (
			SELECT `+field("node_id")+` AS node, `+field("flow_id")+` AS flow, toUInt8(0) AS prompt, conversation_id FROM events
			WHERE `+cond+` AND kind IN ('flow_step', 'flow_dropped')
			UNION ALL
			SELECT node_id, flow_id, toUInt8(role = 'bot'), conversation_id FROM messages WHERE `+cond+` AND node_id != '')
		WHERE node != '' GROUP BY node, flow ORDER BY node, flow LIMIT ?`, both...)
	if err != nil {
		return nil, nil, fmt.Errorf("query: catalog nodes: %w", err)
	}
	defer nrows.Close()
	for nrows.Next() {
		var n CatalogNode
		var prompt uint8
		if err := nrows.Scan(&n.NodeID, &n.FlowID, &prompt, &n.Conversations); err != nil {
			return nil, nil, fmt.Errorf("query: catalog node: %w", err)
		}
		n.HasPrompt = prompt == 1
		nodes = append(nodes, n)
	}
	if err := nrows.Err(); err != nil {
		return nil, nil, fmt.Errorf("query: catalog nodes: %w", err)
	}
	return flows, nodes, nil
}
