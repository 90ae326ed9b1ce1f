package query

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/parley-dev/parley/services/reporting/internal/filter"
)

// Export sources besides the report kinds.
const (
	// ExportConversations is one row per conversation, newest first.
	ExportConversations = "conversations"
	// ExportTranscripts is one row per message, by conversation and time.
	ExportTranscripts = "transcripts"
)

// exportSpecs are the export-only tables. %[1]s is the conversations
// filter; every time column takes the time zone as a placeholder first.
var exportSpecs = map[string]reportSpec{
	ExportConversations: {
		columns: []string{"conversation_id", "link", "started_at", "ended_at", "bot_id", "bot", "channel", "status", "agent",
			"labels", "tags", "flagged", "goals", "first_response_ms", "resolution_seconds", "cost_micros", "currency",
			"input_tokens", "output_tokens", "leads"},
		sql: `SELECT conversation_id, conversation_id, toString(started_at, ?), if(ended_at > toDateTime(0), toString(ended_at, ?), ''),
				bot_id, bot_id, channel, toString(status), agent_name, arrayStringConcat(labels, ', '), arrayStringConcat(tags, ', '),
				toString(flagged), arrayStringConcat(goals, ', '), toString(first_response_ms),
				if(ended_at > toDateTime(0), toString(greatest(dateDiff('second', started_at, ended_at), 0)), ''),
				toString(cost_micros), currency, toString(input_tokens), toString(output_tokens), toString(leads)
			FROM conversations FINAL WHERE %[1]s ORDER BY started_at_us DESC, conversation_id DESC`,
	},
	ExportTranscripts: {
		columns: []string{"conversation_id", "sent_at", "role", "text", "intent", "agent_id", "response_time_ms", "message_id"},
		sql: `SELECT conversation_id, toString(occurred_at, ?), toString(role), text, intent, agent_id, toString(response_time_ms), message_id
			FROM messages FINAL WHERE ` + inFiltered + ` ORDER BY conversation_id, occurred_at_us, stream_seq`,
		messages: true,
	},
}

// ExportKinds are what Stream reads: the export-only tables, then every
// report kind.
func ExportKinds() []string {
	return append([]string{ExportConversations, ExportTranscripts}, ReportKinds...)
}

// ExportColumns returns a kind's columns (nil for an unknown kind).
func ExportColumns(kind string) []string {
	if s, ok := exportSpecs[kind]; ok {
		return slices.Clone(s.columns)
	}
	if s, ok := reportSpecs[kind]; ok && slices.Contains(ReportKinds, kind) {
		return slices.Clone(s.columns)
	}
	return nil
}

// Stream reads every row of kind over w, without a row cap, calling row
// for each as it arrives from ClickHouse (the slice is reused: copy what
// is kept). The caller's context bounds it, not the query timeout.
func (r *Reader) Stream(ctx context.Context, kind string, w *filter.Where, o ReportOptions, row func([]string) error) error {
	loc := o.Location
	if loc == nil {
		loc = time.UTC
	}
	var q string
	var args []any
	if spec, ok := exportSpecs[kind]; ok {
		q = fmt.Sprintf(spec.sql, w.SQL)
		switch kind {
		case ExportConversations:
			args = append(append(args, loc.String(), loc.String()), w.Args...)
		case ExportTranscripts:
			args = append(append(args, loc.String(), w.Tenant), w.Args...)
		}
	} else if spec, ok := reportSpecs[kind]; ok {
		q, args = reportSQL(kind, spec, w, o.WithTimes, loc)
	} else {
		return fmt.Errorf("query: unknown export %q", kind)
	}
	cols := ExportColumns(kind)
	// Small blocks, few in flight: memory stays bounded whatever the rows.
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{"max_block_size": 8192}), clickhouse.WithBlockBufferSize(2))
	rows, err := r.conn.Query(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("query: export %s: %w", kind, err)
	}
	defer rows.Close()
	vals := make([]string, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("query: export %s row: %w", kind, err)
		}
		fillRow(cols, vals, o)
		if err := row(vals); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query: export %s: %w", kind, err)
	}
	return nil
}
