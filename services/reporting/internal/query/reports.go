package query

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/parley-dev/parley/services/reporting/internal/filter"
)

// Report row limits.
const (
	DefaultReportRows = 10000
	MaxReportRows     = 100000
)

// ReportKinds lists the report kinds RunReport knows, in documentation order.
var ReportKinds = []string{"sessions", "sessions_with_markers", "billing", "operators", "productivity", "sources", "pages", "popular_phrases", "client_phrases"}

// Table is a report: column names and rows of values as strings.
type Table struct {
	Columns   []string
	Rows      [][]string
	Truncated bool
}

// reportSpec is one report kind: its columns and query. %[1]s is the
// conversations filter, %[2]s the dialog expression (sessions only).
type reportSpec struct {
	columns []string
	sql     string
	// messages: the query reads messages restricted to the filtered
	// conversations (tenant as first extra argument).
	messages bool
	// convsFirst: the filtered conversations come before the messages
	// (arguments: filter, tenant, filter).
	convsFirst bool
}

// inFiltered restricts a messages query to the filtered conversations.
const inFiltered = `tenant_id = ? AND conversation_id IN (SELECT conversation_id FROM conversations FINAL WHERE %[1]s)`

var sessionColumns = []string{"conversation_id", "started_at", "ended_at", "status", "end_reason", "bot_id", "bot", "channel", "platform", "type",
	"visitor", "country", "city", "messages", "visitor_messages", "bot_messages", "agent_messages", "engagement", "resolved",
	"taken_over", "agent", "goals", "leads", "tags", "labels", "flagged", "cost_micros", "currency",
	"page", "takeover_at", "takeover_agent", "link"}

// sessionSelect renders times in the report's time zone: its first three
// placeholders are that zone.
const sessionSelect = `SELECT conversation_id, toString(started_at, ?), if(ended_at > toDateTime(0), toString(ended_at, ?), ''), toString(status), end_reason,
	bot_id, bot_id, channel, platform, type, visitor_name, country, city, toString(message_count), toString(visitor_messages),
	toString(bot_messages), toString(agent_messages), engagement, toString(resolved), toString(taken_over), agent_name,
	arrayStringConcat(goals, ', '), toString(leads), arrayStringConcat(tags, ', '), arrayStringConcat(labels, ', '),
	toString(flagged), toString(cost_micros), currency,
	start_page_url, if(takeover_at > toDateTime(0), toString(takeover_at, ?), ''), if(length(agents) > 0, agents[1], ''), conversation_id`

// Columns filled in after the query: "bot" from the bot registry,
// "link" from the console's base URL.
const (
	botColumn  = "bot"
	linkColumn = "link"
)

var reportSpecs = map[string]reportSpec{
	"sessions": {
		columns: append(append([]string{}, sessionColumns...), "dialog"),
		sql: sessionSelect + `, dialog FROM (SELECT * FROM conversations FINAL WHERE %[1]s)
			ANY LEFT JOIN (SELECT conversation_id, arrayStringConcat(arrayMap(x -> x.2, arraySort(x -> x.1, groupArray((occurred_at_us, %[2]s)))), '\n') AS dialog
				FROM messages FINAL WHERE ` + inFiltered + ` GROUP BY conversation_id) USING conversation_id
			ORDER BY started_at_us DESC, conversation_id DESC`,
		messages: true,
	},
	"sessions_with_markers": {
		columns: append(append([]string{}, sessionColumns...), "markers"),
		sql: sessionSelect + `, arrayStringConcat(markers, ', ') FROM conversations FINAL WHERE %[1]s AND length(markers) > 0
			ORDER BY started_at_us DESC, conversation_id DESC`,
	},
	"billing": {
		// One row per bot and currency, from the usage lines (a
		// conversation's cost_micros is 0 when its usage is in several
		// currencies): amounts in different currencies are never added. A
		// conversation counts in the row of each currency it used; its paid
		// messages count once, in the row of its first line's currency.
		// Conversations without usage make the row with an empty currency.
		columns: []string{"bot_id", "bot", "currency", "conversations", "paid_messages", "cost_micros", "input_tokens", "output_tokens"},
		sql: `SELECT bot_id, bot_id, u_cur, toString(uniqExact(conversation_id)), toString(sumIf(paid_messages, u_idx <= 1)), toString(sum(u_cost)),
				toString(sum(u_in)), toString(sum(u_out))
			FROM conversations FINAL LEFT ARRAY JOIN usage_currencies AS u_cur, usage_cost_micros AS u_cost, usage_input_tokens AS u_in,
				usage_output_tokens AS u_out, arrayEnumerate(usage_currencies) AS u_idx
			WHERE %[1]s GROUP BY bot_id, u_cur ORDER BY bot_id, u_cur`,
	},
	// operators and productivity read the live agent's response times as
	// lifecycle states them (engagement_classified: first_response_ms,
	// response_ms_sum, response_count of the conversations row), never the
	// client's response_time_ms. A conversation's times count for every
	// agent who wrote in it.
	"operators": {
		columns: []string{"agent_id", "conversations", "messages", "first_response_avg_ms", "response_avg_ms", "replies"},
		sql: `SELECT agent_id, toString(count()), toString(sum(n)),
				toString(round(sumIf(first_response_ms, first_response_ms > 0) / greatest(countIf(first_response_ms > 0), 1))),
				toString(round(sum(response_ms_sum) / greatest(sum(response_count), 1))), toString(sum(response_count))
			FROM (SELECT conversation_id, first_response_ms, response_ms_sum, response_count FROM conversations FINAL WHERE %[1]s)
			ALL INNER JOIN (SELECT agent_id, conversation_id, count() AS n
				FROM messages FINAL WHERE role = 'agent' AND agent_id != '' AND ` + inFiltered + `
				GROUP BY agent_id, conversation_id) USING conversation_id
			GROUP BY agent_id ORDER BY agent_id`,
		messages:   true,
		convsFirst: true,
	},
	"productivity": {
		columns: []string{"conversation_id", "agent_messages", "visitor_messages", "first_response_ms", "response_avg_ms", "replies"},
		sql: `SELECT conversation_id, toString(agent_messages), toString(visitor_messages), toString(first_response_ms),
				toString(round(response_ms_sum / greatest(response_count, 1))), toString(response_count)
			FROM conversations FINAL WHERE %[1]s AND agent_messages > 0 ORDER BY conversation_id`,
	},
	"sources": {
		columns: []string{"channel", "bot_id", "bot", "conversations", "bot_messages", "agent_messages", "visitor_messages", "transferred_to_operator"},
		sql: `SELECT channel, bot_id, bot_id, toString(count()), toString(sum(bot_messages)), toString(sum(agent_messages)), toString(sum(visitor_messages)), toString(countIf(taken_over = 1))
			FROM conversations FINAL WHERE %[1]s GROUP BY channel, bot_id ORDER BY channel, bot_id`,
	},
	"pages": {
		columns: []string{"url", "conversations", "visitors"},
		sql: `SELECT url, toString(count()), toString(uniqExact(visitor_token)) FROM conversations FINAL ARRAY JOIN page_urls AS url
			WHERE %[1]s GROUP BY url ORDER BY count() DESC, url`,
	},
	"popular_phrases": {
		columns: []string{"phrase", "times", "conversations"},
		sql: `SELECT phrase, toString(count()), toString(uniqExact(conversation_id))
			FROM (SELECT conversation_id, ` + normalizedText + ` AS phrase FROM messages FINAL
				WHERE role = 'visitor' AND ` + inFiltered + `)
			WHERE phrase != '' GROUP BY phrase ORDER BY count() DESC, phrase`,
		messages: true,
	},
	"client_phrases": {
		columns: []string{"conversation_id", "sent_at", "text"},
		sql: `SELECT conversation_id, %[2]s, text FROM messages FINAL WHERE role = 'visitor' AND ` + inFiltered + `
			ORDER BY conversation_id, occurred_at_us, stream_seq`,
		messages: true,
	},
}

// normalizedText is a message's text lower-cased, with punctuation as
// spaces, runs of white space as one space, trimmed: "Refund?!" and
// "  refund " are one phrase.
const normalizedText = `replaceRegexpAll(replaceRegexpAll(replaceRegexpAll(lowerUTF8(text), '[\\pP]+', ' '), '\\s+', ' '), '^ | $', '')`

// ReportOptions are what a report needs besides its filter.
type ReportOptions struct {
	// WithTimes adds message times (sessions' dialog, client_phrases).
	WithTimes bool
	// Limit bounds the rows (DefaultReportRows when 0).
	Limit int
	// Location renders times.
	Location *time.Location
	// BotNames are the tenant's bot registry (a bot without a name shows
	// its id).
	BotNames map[string]string
	// ConsoleBaseURL prefixes conversation links:
	// <base>/conversations/<id> (no link when empty).
	ConsoleBaseURL string
}

// Report runs one report kind over the conversations matching w. limit
// bounds the rows (DefaultReportRows when 0).
func (r *Reader) Report(ctx context.Context, kind string, w *filter.Where, o ReportOptions) (*Table, error) {
	withTimes, limit, loc := o.WithTimes, o.Limit, o.Location
	if loc == nil {
		loc = time.UTC
	}
	spec, ok := reportSpecs[kind]
	if !ok {
		return nil, fmt.Errorf("query: unknown report %q", kind)
	}
	if limit <= 0 {
		limit = DefaultReportRows
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	q, args := reportSQL(kind, spec, w, withTimes, loc)
	q += " LIMIT ?"
	args = append(args, limit+1)
	rows, err := r.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("query: report %s: %w", kind, err)
	}
	defer rows.Close()
	t := &Table{Columns: spec.columns}
	n := len(spec.columns)
	for rows.Next() {
		vals := make([]string, n)
		ptrs := make([]any, n)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("query: report %s row: %w", kind, err)
		}
		t.Rows = append(t.Rows, vals)
	}
	fill(t, o)
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query: report %s: %w", kind, err)
	}
	if len(t.Rows) > limit {
		t.Rows, t.Truncated = t.Rows[:limit], true
	}
	return t, nil
}

// reportSQL renders a report kind's query over w, without a limit, with
// its arguments in placeholder order.
func reportSQL(kind string, spec reportSpec, w *filter.Where, withTimes bool, loc *time.Location) (string, []any) {
	second := "''"
	switch kind {
	case "sessions":
		second = "concat(toString(role), ': ', text)"
		if withTimes {
			second = "concat(toString(occurred_at, ?), ' ', toString(role), ': ', text)"
		}
	case "client_phrases":
		if withTimes {
			second = "toString(occurred_at, ?)"
		}
	}
	q := fmt.Sprintf(spec.sql, w.SQL, second)
	// Arguments in placeholder order.
	var args []any
	tzArg := func() {
		if withTimes && (kind == "sessions" || kind == "client_phrases") {
			args = append(args, loc.String())
		}
	}
	if kind == "sessions" || kind == "sessions_with_markers" {
		args = append(args, loc.String(), loc.String(), loc.String()) // session times
	}
	switch kind {
	case "sessions":
		args = append(args, w.Args...) // outer conversations
		tzArg()                        // dialog expression
		args = append(args, w.Tenant)
		args = append(args, w.Args...) // messages subquery filter
	case "client_phrases":
		tzArg()
		args = append(args, w.Tenant)
		args = append(args, w.Args...)
	default:
		if spec.convsFirst {
			args = append(args, w.Args...)
		}
		if spec.messages {
			args = append(args, w.Tenant)
		}
		args = append(args, w.Args...)
	}
	return q, args
}

// fill resolves the bot and link columns.
func fill(t *Table, o ReportOptions) {
	for _, row := range t.Rows {
		fillRow(t.Columns, row, o)
	}
}

// fillRow resolves one row's bot and link columns.
func fillRow(cols, row []string, o ReportOptions) {
	for c, name := range cols {
		switch name {
		case botColumn:
			if n, ok := o.BotNames[row[c]]; ok {
				row[c] = n
			}
		case linkColumn:
			if base := strings.TrimRight(o.ConsoleBaseURL, "/"); base == "" {
				row[c] = ""
			} else {
				row[c] = base + "/conversations/" + url.PathEscape(row[c])
			}
		}
	}
}
