// Package synthetic fills reporting's ClickHouse tables with generated
// conversations for query benchmarks. The rows are made inside ClickHouse
// (INSERT ... SELECT FROM system.numbers), so a million take seconds and a
// benchmark measures queries, not ingest. Used by the reporting service's
// benchmarks and by tools/bench.
package synthetic

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/parley-dev/parley/services/reporting/internal/search"
)

// Options shape a batch of synthetic conversations.
type Options struct {
	// Tenant owns them; their ids are Prefix followed by 0..N-1.
	Tenant, Prefix string
	N              int
	// Span is the window their starts are spread evenly over, ending at End
	// (conversation 0 is the newest).
	Span time.Duration
	End  time.Time
	// Messages adds one visitor message per conversation (one in a thousand
	// asks for a refund), with its words in the search index.
	Messages bool
}

// Insert writes the conversations (and messages) into conversations (and
// messages) of the database ch is connected to. Statuses, channels,
// platforms, countries, tags, goals, leads, takeovers, flows, costs and
// engagement cycle through fixed patterns of the conversation number, so
// each filter selects a known share.
func Insert(ctx context.Context, ch driver.Conn, o Options) error {
	if o.N <= 0 {
		return fmt.Errorf("synthetic: N must be positive")
	}
	end := o.End.UnixMicro()
	step := o.Span.Microseconds() / int64(o.N)
	if err := ch.Exec(ctx, fmt.Sprintf(`INSERT INTO conversations (tenant_id, conversation_id, started_at, started_at_us, last_activity_at, status, end_reason,
			bot_id, channel, platform, type, visitor_token, visitor_name, country, city, message_count, visitor_messages, bot_messages, tags, goals, leads, taken_over,
			flows_started, flow_drops, cost_micros, engagement, version)
		SELECT ?, concat(?, toString(number)), toDateTime(intDiv(ts, 1000000)), ts, toDateTime(intDiv(ts, 1000000) + 300),
			if(number %% 3 = 0, 'active', 'ended'), if(number %% 3 = 0, '', 'visitor_closed'),
			concat('bot-', toString(number %% 5)), ['web_widget', 'whatsapp', 'telegram', 'api'][number %% 4 + 1], ['desktop', 'mobile_web', 'app'][number %% 3 + 1],
			if(number %% 10 = 0, 'test', 'live'), concat('visitor-', toString(number %% %[4]d)), concat('Visitor ', toString(number)), ['DE', 'FR', 'US', 'GB', 'BR'][number %% 5 + 1], 'City',
			toUInt32(number %% 12 + 1), toUInt32(number %% 6), toUInt32(number %% 6 + 1),
			if(number %% 7 = 0, ['unidentified-response'], emptyArrayString()), if(number %% 11 = 0, ['purchase'], emptyArrayString()),
			toUInt32(number %% 13 = 0), toUInt8(number %% 17 = 0),
			if(number %% 2 = 0, ['checkout'], emptyArrayString()), if(number %% 8 = 0, ['checkout/pay/n2'], emptyArrayString()),
			toInt64(number %% 1000), ['no_reply', 'engaged', 'completed', 'goal_completed'][number %% 4 + 1], number + 1
		FROM (SELECT number, %[1]d - toInt64(number) * %[2]d AS ts FROM system.numbers LIMIT %[3]d)`, end, step, o.N, visitors(o.N)), o.Tenant, o.Prefix); err != nil {
		return fmt.Errorf("synthetic: conversations: %w", err)
	}
	// Their visitors in the visitor index, as the projector writes them.
	if err := ch.Exec(ctx, fmt.Sprintf(`INSERT INTO visitor_conversations (tenant_id, visitor_token, started_at_us, conversation_id)
		SELECT ?, concat('visitor-', toString(number %% %[4]d)), ts, concat(?, toString(number))
		FROM (SELECT number, %[1]d - toInt64(number) * %[2]d AS ts FROM system.numbers LIMIT %[3]d)`, end, step, o.N, visitors(o.N)), o.Tenant, o.Prefix); err != nil {
		return fmt.Errorf("synthetic: visitor conversations: %w", err)
	}
	if !o.Messages {
		return nil
	}
	if err := ch.Exec(ctx, fmt.Sprintf(`INSERT INTO messages (tenant_id, conversation_id, event_id, role, text, occurred_at, occurred_at_us, stream_seq)
		SELECT ?, concat(?, toString(number)), toString(number), 'visitor',
			if(number %% 1000 = 0, ?, ?), toDateTime(intDiv(%d - toInt64(number) * %d, 1000000)), %d - toInt64(number) * %d, number + 1
		FROM system.numbers LIMIT %d`, end, step, end, step, o.N), o.Tenant, o.Prefix, refundText, orderText); err != nil {
		return fmt.Errorf("synthetic: messages: %w", err)
	}
	// Their words in the search index, as the projector writes them.
	if err := ch.Exec(ctx, fmt.Sprintf(`INSERT INTO message_tokens (tenant_id, token, day, started_at_us, conversation_id)
		SELECT ?, arrayJoin(if(number %% 1000 = 0, ?, ?)), toDate(toDateTime(intDiv(ts, 1000000))), ts, concat(?, toString(number))
		FROM (SELECT number, %d - toInt64(number) * %d AS ts FROM system.numbers LIMIT %d)`, end, step, o.N), o.Tenant, search.Tokens(refundText), search.Tokens(orderText), o.Prefix); err != nil {
		return fmt.Errorf("synthetic: message tokens: %w", err)
	}
	return nil
}

// visitors is how many visitor tokens n conversations share: conversation
// i belongs to visitor-(i mod visitors), four conversations each.
func visitors(n int) int { return max(1, n/4) }

// The synthetic messages' texts.
const (
	refundText = "I want a refund"
	orderText  = "where is my order"
)
