// Package filter turns a reporting Filter into a parameterised ClickHouse
// WHERE clause over the conversations table. It is pure: no I/O, and the
// clock is passed in. User input only ever travels as query parameters;
// the SQL text is built from fixed fragments.
package filter

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
	// Time zone data for presets in any tenant time zone, also in images
	// without /usr/share/zoneinfo.
	_ "time/tzdata"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/search"
)

// Limits on filter values. They keep every query built from a filter well
// under ClickHouse's max_query_size (256 KiB by default; a report repeats
// the condition up to three times), so a filter either passes here or runs.
const (
	MaxValues     = 100   // values in one repeated field
	MaxTextLen    = 200   // characters of free-text search
	MaxValueLen   = 256   // characters of one value
	MaxTotalBytes = 16384 // bytes of all string values of one filter together
)

// Time bounds a range may have: what ClickHouse DateTime holds (seconds
// since 1970 as UInt32, up to 2106-02-07), rounded to whole years.
var (
	MinTime = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	MaxTime = time.Date(2106, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Violation names the offending field.
type Violation struct {
	Field       string
	Description string
}

func (v *Violation) Error() string { return v.Field + ": " + v.Description }

// Where is a built condition.
type Where struct {
	// Tenant is the tenant the condition is scoped to.
	Tenant string
	// SQL is the condition, with ? placeholders.
	SQL  string
	Args []any
	// From and To are the resolved start-time bounds (To is exclusive; zero
	// means unbounded).
	From, To time.Time
	// Location is the time zone the presets were resolved in.
	Location *time.Location
}

// Statuses accepted by Filter.statuses.
var statusSQL = map[string]string{
	"active":               "status = 'active'",
	"ended":                "status = 'ended'",
	"no_operator_response": "operator_no_response = 1",
}

// Build returns the condition selecting the tenant's conversations that match
// f. now is the server clock; defaultTZ the tenant's time zone, used when the
// filter names none. The condition references the conversations table's
// columns; message search uses a subquery on messages.
func Build(tenant string, f *reportingv1.Filter, now time.Time, defaultTZ string) (*Where, *Violation) {
	if f == nil {
		f = &reportingv1.Filter{}
	}
	w := &Where{Tenant: tenant}
	var conds []string
	add := func(sql string, args ...any) {
		conds = append(conds, sql)
		w.Args = append(w.Args, args...)
	}
	add("tenant_id = ?", tenant)
	if n := valueBytes(f); n > MaxTotalBytes {
		return nil, &Violation{"filter", fmt.Sprintf("%d bytes of values; at most %d bytes over all fields together", n, MaxTotalBytes)}
	}

	from, to, loc, v := TimeBounds(f.GetTimeRange(), now, defaultTZ)
	if v != nil {
		return nil, v
	}
	w.From, w.To, w.Location = from, to, loc
	// The DateTime bounds let ClickHouse skip whole partitions; the
	// microsecond bounds are exact.
	if !from.IsZero() {
		add("started_at >= toDateTime(?)", from.Unix())
		add("started_at_us >= ?", from.UnixMicro())
	}
	if !to.IsZero() {
		add("started_at <= toDateTime(?)", to.Unix())
		add("started_at_us < ?", to.UnixMicro())
	}

	if sts := f.GetStatuses(); len(sts) > 0 {
		if v := checkValues("filter.statuses", sts); v != nil {
			return nil, v
		}
		var or []string
		for i, s := range sts {
			sql, ok := statusSQL[s]
			if !ok {
				return nil, &Violation{fmt.Sprintf("filter.statuses[%d]", i), fmt.Sprintf("unknown status %q; want active, ended or no_operator_response", s)}
			}
			or = append(or, sql)
		}
		add("(" + strings.Join(or, " OR ") + ")")
	}
	if vals := f.GetBotIds(); len(vals) > 0 {
		if v := checkValues("filter.bot_ids", vals); v != nil {
			return nil, v
		}
		add("has(?, bot_id)", vals)
	}
	if vs := f.GetChannels(); len(vs) > 0 {
		names, v := enumNames("filter.channels", vs, eventv1.Channel_name, "CHANNEL_")
		if v != nil {
			return nil, v
		}
		add("has(?, channel)", names)
	}
	if vs := f.GetPlatforms(); len(vs) > 0 {
		names, v := enumNames("filter.platforms", vs, eventv1.Platform_name, "PLATFORM_")
		if v != nil {
			return nil, v
		}
		add("has(?, platform)", names)
	}
	if vs := f.GetTypes(); len(vs) > 0 {
		names, v := enumNames("filter.types", vs, eventv1.ConversationType_name, "CONVERSATION_TYPE_")
		if v != nil {
			return nil, v
		}
		add("has(?, type)", names)
	}
	if vs := f.GetEngagements(); len(vs) > 0 {
		names, v := enumNames("filter.engagements", vs, eventv1.Engagement_name, "ENGAGEMENT_")
		if v != nil {
			return nil, v
		}
		add("has(?, "+EngagementSQL+")", names)
	}
	if vs := f.GetEndReasons(); len(vs) > 0 {
		names, v := enumNames("filter.end_reasons", vs, eventv1.EndReason_name, "END_REASON_")
		if v != nil {
			return nil, v
		}
		add("has(?, end_reason)", names)
	}
	if vals := f.GetGoals(); len(vals) > 0 {
		if v := checkValues("filter.goals", vals); v != nil {
			return nil, v
		}
		add("hasAny(goals, ?)", vals)
	}
	if f.HasGoal != nil {
		if f.GetHasGoal() {
			add("notEmpty(goals)")
		} else {
			add("empty(goals)")
		}
	}
	if f.TakenOver != nil {
		add("taken_over = ?", b2u(f.GetTakenOver()))
	}
	if f.AgentPresent != nil {
		add("agent_present = ?", b2u(f.GetAgentPresent()))
	}
	if f.Resolved != nil {
		add("resolved = ?", b2u(f.GetResolved()))
	}
	if f.HasLead != nil {
		if f.GetHasLead() {
			add("leads > 0")
		} else {
			add("leads = 0")
		}
	}
	if vals := f.GetTags(); len(vals) > 0 {
		if v := checkValues("filter.tags", vals); v != nil {
			return nil, v
		}
		add("hasAny(tags, ?)", vals)
	}
	if vals := f.GetLabels(); len(vals) > 0 {
		if v := checkValues("filter.labels", vals); v != nil {
			return nil, v
		}
		add("hasAny(labels, ?)", vals)
	}
	if f.Flagged != nil {
		add("flagged = ?", b2u(f.GetFlagged()))
	}
	if v := checkValue("filter.flow_id", f.GetFlowId()); v != nil {
		return nil, v
	}
	if v := checkValue("filter.flow_step_id", f.GetFlowStepId()); v != nil {
		return nil, v
	}
	switch flow, step := f.GetFlowId(), f.GetFlowStepId(); {
	case flow == "" && (step != "" || f.GetDroppedOff()):
		field := "filter.flow_step_id"
		if step == "" {
			field = "filter.dropped_off"
		}
		return nil, &Violation{field, "needs filter.flow_id"}
	case f.GetDroppedOff() && step != "":
		add("arrayExists(x -> startsWith(x, ?), flow_drops)", flow+"/"+step+"/")
	case f.GetDroppedOff():
		add("arrayExists(x -> startsWith(x, ?), flow_drops)", flow+"/")
	case step != "":
		add("has(flow_steps, ?)", flow+"/"+step)
	case flow != "":
		add("has(flows_started, ?)", flow)
	}
	if nodes := f.GetNodeIds(); len(nodes) > 0 || f.GetNodeId() != "" {
		if v := checkValues("filter.node_ids", nodes); v != nil {
			return nil, v
		}
		if v := checkValue("filter.node_id", f.GetNodeId()); v != nil {
			return nil, v
		}
		if id := f.GetNodeId(); id != "" {
			nodes = append(append([]string(nil), nodes...), id)
		}
		add("hasAny(nodes, ?)", nodes)
	}
	for _, s := range []struct{ field, col, val string }{
		{"filter.country", "country = ?", strings.ToUpper(f.GetCountry())},
		{"filter.region", "region = ?", f.GetRegion()},
		{"filter.city", "city = ?", f.GetCity()},
		{"filter.agent_id", "has(agents, ?)", f.GetAgentId()},
	} {
		if s.val == "" {
			continue
		}
		if v := checkValue(s.field, s.val); v != nil {
			return nil, v
		}
		add(s.col, s.val)
	}
	if token := f.GetVisitorToken(); token != "" {
		if v := checkValue("filter.visitor_token", token); v != nil {
			return nil, v
		}
		sql, args := VisitorSQL(tenant, token)
		add(sql, args...)
	}
	if text := strings.TrimSpace(f.GetText()); text != "" {
		if !utf8.ValidString(text) || utf8.RuneCountInString(text) > MaxTextLen {
			return nil, &Violation{"filter.text", fmt.Sprintf("at most %d characters of UTF-8", MaxTextLen)}
		}
		tokens := search.Tokens(text)
		if len(tokens) == 0 {
			return nil, &Violation{"filter.text", "no word to search for (words are letters and digits)"}
		}
		sql, args := textSQL(tenant, tokens, from, to)
		add(sql, args...)
	}
	w.SQL = strings.Join(conds, " AND ")
	return w, nil
}

// EngagementSQL is a conversation's engagement class: lifecycle's
// classification once it has one (when the conversation ends), before that
// the class its facts already imply by the same rule (a goal reached:
// goal_completed; else a flow completed: completed; else a visitor message:
// engaged). An active conversation's class can still rise; no_reply is only
// known at the end.
const EngagementSQL = `if(engagement != '', engagement, multiIf(notEmpty(goals), 'goal_completed', notEmpty(flows_completed), 'completed', visitor_messages > 0, 'engaged', ''))`

// VisitorSQL selects the conversations of one visitor token through the
// visitor_conversations table: ordered by (tenant_id, visitor_token, ...),
// it holds the start of each of the visitor's conversations, which narrows
// the conversations table's primary key (tenant_id, started_at_us, ...) to
// the granules holding them instead of a scan of the tenant.
func VisitorSQL(tenant, token string) (string, []any) {
	return "visitor_token = ? AND started_at_us IN (SELECT started_at_us FROM visitor_conversations WHERE tenant_id = ? AND visitor_token = ?)",
		[]any{token, tenant, token}
}

// textSQL selects the conversations with every token in some message,
// through the message_tokens index: ordered by (tenant_id, token, day), it
// reads only the granules of the searched tokens in the range. Several
// tokens nest (the conversations of one token among those of the next),
// longest innermost: a long word is usually the rarest, so sets stay small.
// The start times of the longest token's conversations also narrow the
// conversations table's primary key (tenant_id, started_at_us, ...) to the
// granules holding them.
func textSQL(tenant string, tokens []string, from, to time.Time) (string, []any) {
	tokens = slices.Clone(tokens)
	slices.SortStableFunc(tokens, func(a, b string) int { return len(b) - len(a) })
	lookup := func(col, token string) (string, []any) {
		q := "SELECT " + col + " FROM message_tokens WHERE tenant_id = ? AND token = ?"
		a := []any{tenant, token}
		if !from.IsZero() {
			q += " AND day >= toDate(?) AND started_at_us >= ?"
			a = append(a, from.Format("2006-01-02"), from.UnixMicro())
		}
		if !to.IsZero() {
			q += " AND day <= toDate(?) AND started_at_us < ?"
			a = append(a, to.Format("2006-01-02"), to.UnixMicro())
		}
		return q, a
	}
	var sql string
	var args []any
	for i, t := range tokens {
		q, a := lookup("conversation_id", t)
		if i > 0 {
			q += " AND conversation_id IN (" + sql + ")"
			a = append(a, args...)
		}
		sql, args = q, a
	}
	starts, sargs := lookup("started_at_us", tokens[0])
	return "started_at_us IN (" + starts + ") AND conversation_id IN (" + sql + ")", append(sargs, args...)
}

// TimeBounds resolves a time range to [from, to) in UTC. Presets are
// calendar days in the range's time zone (or defaultTZ): "today" is since
// local midnight, "last_7_days" the last 7 calendar days including today.
// An empty range means the last 24 hours.
func TimeBounds(r *reportingv1.TimeRange, now time.Time, defaultTZ string) (from, to time.Time, loc *time.Location, v *Violation) {
	tzName := r.GetTimeZone()
	field := "filter.time_range.time_zone"
	if tzName == "" {
		tzName, field = defaultTZ, "tenant time zone"
	}
	if tzName == "" {
		tzName = "UTC"
	}
	// "Local" is the server's own zone, which Go accepts but a client cannot
	// know; the API takes IANA names only.
	loc, err := time.LoadLocation(tzName)
	if err != nil || len(tzName) > 64 || tzName == "Local" {
		return from, to, nil, &Violation{field, fmt.Sprintf("unknown time zone %q", tzName)}
	}
	local := now.In(loc)
	midnight := time.Date(local.Year(), local.Month(), local.Day(), 0, 0, 0, 0, loc)
	days := func(n int) time.Time { return midnight.AddDate(0, 0, -n) }
	switch p := r.GetPreset(); p {
	case "":
		if r.GetFrom() != nil || r.GetTo() != nil {
			return custom(r, loc)
		}
		return now.Add(-24 * time.Hour).UTC(), time.Time{}, loc, nil
	case "last_24_hours":
		return now.Add(-24 * time.Hour).UTC(), time.Time{}, loc, nil
	case "today":
		return midnight.UTC(), time.Time{}, loc, nil
	case "yesterday":
		return days(1).UTC(), midnight.UTC(), loc, nil
	case "last_7_days":
		return days(6).UTC(), time.Time{}, loc, nil
	case "last_30_days":
		return days(29).UTC(), time.Time{}, loc, nil
	case "last_60_days":
		return days(59).UTC(), time.Time{}, loc, nil
	case "all_time":
		return time.Time{}, time.Time{}, loc, nil
	case "custom":
		return custom(r, loc)
	default:
		return from, to, nil, &Violation{"filter.time_range.preset", fmt.Sprintf("unknown preset %q; want today, yesterday, last_24_hours, last_7_days, last_30_days, last_60_days, all_time or custom", p)}
	}
}

func custom(r *reportingv1.TimeRange, loc *time.Location) (from, to time.Time, _ *time.Location, v *Violation) {
	if r.GetFrom() == nil || r.GetFrom().CheckValid() != nil {
		return from, to, nil, &Violation{"filter.time_range.from", "a custom range needs a valid from"}
	}
	from = r.GetFrom().AsTime().UTC()
	if from.Before(MinTime) || !from.Before(MaxTime) {
		return from, to, nil, &Violation{"filter.time_range.from", outOfRange}
	}
	if r.GetTo() != nil {
		if r.GetTo().CheckValid() != nil {
			return from, to, nil, &Violation{"filter.time_range.to", "invalid timestamp"}
		}
		to = r.GetTo().AsTime().UTC()
		if to.Before(MinTime) || to.After(MaxTime) {
			return from, to, nil, &Violation{"filter.time_range.to", outOfRange}
		}
		if !to.After(from) {
			return from, to, nil, &Violation{"filter.time_range.to", "must be after from"}
		}
	}
	return from, to, loc, nil
}

const outOfRange = "must lie within 1970-01-01T00:00:00Z .. 2106-01-01T00:00:00Z"

// valueBytes is the size of a filter's string values together.
func valueBytes(f *reportingv1.Filter) int {
	n := len(f.GetText()) + len(f.GetFlowId()) + len(f.GetFlowStepId()) + len(f.GetNodeId()) +
		len(f.GetCountry()) + len(f.GetRegion()) + len(f.GetCity()) + len(f.GetAgentId()) + len(f.GetTimeRange().GetTimeZone()) + len(f.GetVisitorToken())
	for _, vals := range [][]string{f.GetStatuses(), f.GetBotIds(), f.GetGoals(), f.GetTags(), f.GetLabels(), f.GetNodeIds()} {
		for _, v := range vals {
			n += len(v)
		}
	}
	return n
}

func enumNames[E ~int32](field string, vs []E, names map[int32]string, prefix string) ([]string, *Violation) {
	if len(vs) > MaxValues {
		return nil, &Violation{field, fmt.Sprintf("at most %d values", MaxValues)}
	}
	out := make([]string, len(vs))
	for i, v := range vs {
		n, ok := names[int32(v)]
		if !ok || v == 0 {
			return nil, &Violation{fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("unknown or unspecified value %d", v)}
		}
		out[i] = strings.ToLower(strings.TrimPrefix(n, prefix))
	}
	return out, nil
}

func checkValues(field string, vals []string) *Violation {
	if len(vals) > MaxValues {
		return &Violation{field, fmt.Sprintf("at most %d values", MaxValues)}
	}
	for i, v := range vals {
		if v == "" {
			return &Violation{fmt.Sprintf("%s[%d]", field, i), "empty value"}
		}
		if viol := checkValue(fmt.Sprintf("%s[%d]", field, i), v); viol != nil {
			return viol
		}
	}
	return nil
}

func checkValue(field, v string) *Violation {
	if !utf8.ValidString(v) || utf8.RuneCountInString(v) > MaxValueLen {
		return &Violation{field, fmt.Sprintf("at most %d characters of UTF-8", MaxValueLen)}
	}
	return nil
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
