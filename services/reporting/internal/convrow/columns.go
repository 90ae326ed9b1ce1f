package convrow

import (
	"time"

	"github.com/parley-dev/parley/services/reporting/internal/convstate"
)

// field declares a column that holds a state field as it is.
func field[T any](name, typ string, f func(*convstate.State) *T) Column {
	return col(name, typ, func(s *convstate.State) T { return *f(s) }, func(s *convstate.State, v T) { *f(s) = v })
}

func str(name string, f func(*convstate.State) *string) Column { return field(name, "String", f) }
func u32(name string, f func(*convstate.State) *uint32) Column { return field(name, "UInt32", f) }
func u64(name string, f func(*convstate.State) *uint64) Column { return field(name, "UInt64", f) }
func i64(name string, f func(*convstate.State) *int64) Column  { return field(name, "Int64", f) }

// list is an Array(String) column (never NULL: empty lists are empty arrays).
func list(name string, f func(*convstate.State) *[]string) Column {
	return col(name, "Array(String)", func(s *convstate.State) []string { return nonNil(*f(s)) },
		func(s *convstate.State, v []string) { *f(s) = nilIfEmpty(v) })
}

// flag is a UInt8 column of a bool, 1 or 0.
func flag(name string, f func(*convstate.State) *bool) Column {
	return col(name, "UInt8", func(s *convstate.State) uint8 { return b2u(*f(s)) },
		func(s *convstate.State, v uint8) { *f(s) = v == 1 })
}

// at is a DateTime column (UTC seconds; the zero time is 1970-01-01).
func at(name string, f func(*convstate.State) *time.Time) Column {
	return col(name, "DateTime", func(s *convstate.State) time.Time { return chTime(*f(s)) },
		func(s *convstate.State, v time.Time) { *f(s) = fromCH(v) })
}

// Columns is the conversations row, in the table's column order
// (docs/clickhouse.md describes each column).
func Columns() []Column {
	type S = convstate.State
	return []Column{
		str("tenant_id", func(s *S) *string { return &s.TenantID }),
		str("conversation_id", func(s *S) *string { return &s.ConversationID }),
		at("started_at", func(s *S) *time.Time { return &s.StartedAt }),
		col("started_at_us", "Int64", func(s *S) int64 { return s.StartedAt.UnixMicro() },
			func(s *S, v int64) { s.StartedAt = time.UnixMicro(v).UTC() }),
		at("last_activity_at", func(s *S) *time.Time { return &s.LastActivityAt }),
		at("ended_at", func(s *S) *time.Time { return &s.EndedAt }),
		col("status", "Enum8('active' = 1, 'ended' = 2)", func(s *S) int8 { v, _ := statusEnum(s.Status); return v },
			func(s *S, v int8) { s.Status = map[int8]string{1: "active", 2: "ended"}[v] }),
		str("end_reason", func(s *S) *string { return &s.EndReason }),
		str("ended_by", func(s *S) *string { return &s.EndedBy }),
		str("bot_id", func(s *S) *string { return &s.BotID }),
		str("channel", func(s *S) *string { return &s.Channel }),
		str("platform", func(s *S) *string { return &s.Platform }),
		str("type", func(s *S) *string { return &s.Type }),
		str("device_type", func(s *S) *string { return &s.DeviceType }),
		str("visitor_token", func(s *S) *string { return &s.VisitorToken }),
		str("visitor_name", func(s *S) *string { return &s.VisitorName }),
		str("locale", func(s *S) *string { return &s.Locale }),
		str("country", func(s *S) *string { return &s.Country }),
		str("region", func(s *S) *string { return &s.Region }),
		str("city", func(s *S) *string { return &s.City }),
		str("start_page_url", func(s *S) *string { return &s.StartPageURL }),
		str("referrer", func(s *S) *string { return &s.Referrer }),
		list("page_urls", func(s *S) *[]string { return &s.PageURLs }),
		col("variable_keys", "Array(String)", func(s *S) []string { return sortedKeys(s.Variables) }, setVariableKeys),
		col("variable_values", "Array(String)", func(s *S) []string { return variableValues(s.Variables) }, setVariableValues),
		col("message_count", "UInt32", (*S).MessageCount, nil),
		u32("visitor_messages", func(s *S) *uint32 { return &s.VisitorMessages }),
		u32("bot_messages", func(s *S) *uint32 { return &s.BotMessages }),
		u32("agent_messages", func(s *S) *uint32 { return &s.AgentMessages }),
		u32("system_messages", func(s *S) *uint32 { return &s.SystemMessages }),
		u32("unidentified_count", func(s *S) *uint32 { return &s.UnidentifiedCount }),
		u32("paid_messages", func(s *S) *uint32 { return &s.PaidMessages }),
		str("last_message_text", func(s *S) *string { return &s.LastMessageText }),
		str("last_message_role", func(s *S) *string { return &s.LastMessageRole }),
		at("last_message_at", func(s *S) *time.Time { return &s.LastMessageAt }),
		list("intents", func(s *S) *[]string { return &s.Intents }),
		list("nodes", func(s *S) *[]string { return &s.Nodes }),
		list("flows_started", func(s *S) *[]string { return &s.FlowsStarted }),
		list("flows_completed", func(s *S) *[]string { return &s.FlowsCompleted }),
		list("flow_steps", func(s *S) *[]string { return &s.FlowSteps }),
		list("flow_drops", func(s *S) *[]string { return &s.FlowDrops }),
		list("goals", func(s *S) *[]string { return &s.Goals }),
		i64("goal_value_micros", func(s *S) *int64 { return &s.GoalValue }),
		u32("leads", func(s *S) *uint32 { return &s.Leads }),
		list("markers", func(s *S) *[]string { return &s.Markers }),
		flag("handoff_requested", func(s *S) *bool { return &s.HandoffRequested }),
		at("handoff_at", func(s *S) *time.Time { return &s.HandoffAt }),
		flag("taken_over", func(s *S) *bool { return &s.TakenOver }),
		at("takeover_at", func(s *S) *time.Time { return &s.TakeoverAt }),
		list("agents", func(s *S) *[]string { return &s.Agents }),
		str("agent_name", func(s *S) *string { return &s.AgentName }),
		// Whether an agent is in the conversation now (the agents present
		// themselves are kept in the fold state only).
		col("agent_present", "UInt8", func(s *S) uint8 { return b2u(len(s.AgentsPresent) > 0) }, nil),
		flag("operator_no_response", func(s *S) *bool { return &s.OperatorNoResponse }),
		u32("first_response_ms", func(s *S) *uint32 { return &s.FirstResponseMS }),
		u64("response_ms_sum", func(s *S) *uint64 { return &s.ResponseMSSum }),
		u32("response_count", func(s *S) *uint32 { return &s.ResponseCount }),
		u32("max_response_ms", func(s *S) *uint32 { return &s.MaxResponseMS }),
		str("engagement", func(s *S) *string { return &s.Engagement }),
		flag("resolved", func(s *S) *bool { return &s.Resolved }),
		list("tags", func(s *S) *[]string { return &s.Tags }),
		list("labels", func(s *S) *[]string { return &s.Labels }),
		flag("flagged", func(s *S) *bool { return &s.Flagged }),
		i64("cost_micros", func(s *S) *int64 { return &s.CostMicros }),
		str("currency", func(s *S) *string { return &s.Currency }),
		u64("input_tokens", func(s *S) *uint64 { return &s.InputTokens }),
		u64("output_tokens", func(s *S) *uint64 { return &s.OutputTokens }),
		u32("event_count", func(s *S) *uint32 { return &s.EventCount }),
		u64("version", func(s *S) *uint64 { return &s.LastSeq }),
		// 010_conversation_detail.sql
		col("variable_sources", "Array(String)", variableSources, setVariableSources),
		flag("debug_enabled", func(s *S) *bool { return &s.DebugEnabled }),
		u64("bot_response_ms_sum", func(s *S) *uint64 { return &s.BotResponseMSSum }),
		u32("bot_response_count", func(s *S) *uint32 { return &s.BotResponseCount }),
		usage("usage_models", "Array(String)", func(u *convstate.Usage) *string { return &u.Model }),
		usage("usage_currencies", "Array(String)", func(u *convstate.Usage) *string { return &u.Currency }),
		usage("usage_cost_micros", "Array(Int64)", func(u *convstate.Usage) *int64 { return &u.CostMicros }),
		usage("usage_input_tokens", "Array(UInt64)", func(u *convstate.Usage) *uint64 { return &u.InputTokens }),
		usage("usage_output_tokens", "Array(UInt64)", func(u *convstate.Usage) *uint64 { return &u.OutputTokens }),
	}
}

// usage is an array column of one field of the usage lines (parallel
// arrays: element i of each belongs to line i).
func usage[T any](name, typ string, f func(*convstate.Usage) *T) Column {
	return col(name, typ, func(s *convstate.State) []T {
		lines := s.UsageLines()
		out := make([]T, len(lines))
		for i := range lines {
			out[i] = *f(&lines[i])
		}
		return out
	}, func(s *convstate.State, v []T) {
		for len(s.Usage) < len(v) {
			s.Usage = append(s.Usage, convstate.Usage{})
		}
		for i := range v {
			*f(&s.Usage[i]) = v[i]
		}
	})
}

// variableSources are the variables' sources in the order of sortedKeys
// ("" for none).
func variableSources(s *convstate.State) []string {
	keys := sortedKeys(s.Variables)
	for i, k := range keys {
		keys[i] = s.VariableSources[k]
	}
	return keys
}

func setVariableSources(s *convstate.State, v []string) {
	for i, k := range sortedKeys(s.Variables) {
		if i < len(v) && v[i] != "" {
			if s.VariableSources == nil {
				s.VariableSources = map[string]string{}
			}
			s.VariableSources[k] = v[i]
		}
	}
}
