// Package convstate folds a conversation's events into the latest state that
// the conversations table holds: one row per conversation with its metadata,
// counts, flows, goals, takeover, tags, labels, flag and cost. It is pure:
// no I/O, no clock. Applying the same events again (a redelivery or a replay)
// changes nothing, because every event carries its stream sequence and a
// state remembers the last one it applied.
package convstate

import (
	"hash/fnv"
	"slices"
	"strings"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// Bounds on list-valued fields, so one runaway conversation cannot grow a row
// without limit. Counts stay exact.
const (
	// MaxSeen bounds the event ids a state remembers for deduplication.
	MaxSeen      = 2000
	MaxListItems = 100
	MaxPageURLs  = 50
	maxTextChars = 500
)

// State is one conversation's latest facts. Times are UTC; zero means unknown.
type State struct {
	TenantID       string `json:"t"`
	ConversationID string `json:"c"`
	// StartedAt is the occurred_at of the first event projected for the
	// conversation. It never changes afterwards, so it is a stable sort and
	// pagination key.
	StartedAt      time.Time `json:"sa"`
	LastActivityAt time.Time `json:"la"`
	EndedAt        time.Time `json:"ea,omitzero"`
	// Status is "active" or "ended".
	Status    string `json:"st"`
	EndReason string `json:"er,omitempty"`
	EndedBy   string `json:"eb,omitempty"`

	BotID      string `json:"b,omitempty"`
	Channel    string `json:"ch,omitempty"`
	Platform   string `json:"pl,omitempty"`
	Type       string `json:"ty,omitempty"`
	DeviceType string `json:"dt,omitempty"`

	VisitorToken string `json:"vt,omitempty"`
	VisitorName  string `json:"vn,omitempty"`
	Locale       string `json:"lo,omitempty"`
	Country      string `json:"co,omitempty"`
	Region       string `json:"re,omitempty"`
	City         string `json:"ci,omitempty"`

	StartPageURL string            `json:"sp,omitempty"`
	Referrer     string            `json:"rf,omitempty"`
	PageURLs     []string          `json:"pu,omitempty"`
	Variables    map[string]string `json:"va,omitempty"`
	// VariableSources is where each variable's value came from:
	// "pre_chat_form" (conversation_started), else the source of the
	// variables_captured that set it last ("extracted", "api", or "").
	VariableSources map[string]string `json:"vs,omitempty"`
	// DebugEnabled: the bot runs in debug mode for this conversation.
	DebugEnabled bool `json:"de,omitempty"`

	VisitorMessages   uint32    `json:"mv,omitempty"`
	BotMessages       uint32    `json:"mb,omitempty"`
	AgentMessages     uint32    `json:"ma,omitempty"`
	SystemMessages    uint32    `json:"ms,omitempty"`
	UnidentifiedCount uint32    `json:"un,omitempty"`
	PaidMessages      uint32    `json:"pm,omitempty"`
	LastMessageText   string    `json:"lt,omitempty"`
	LastMessageRole   string    `json:"lr,omitempty"`
	LastMessageAt     time.Time `json:"lm,omitzero"`
	Intents           []string  `json:"in,omitempty"`
	Nodes             []string  `json:"no,omitempty"`

	FlowsStarted   []string `json:"fs,omitempty"`
	FlowsCompleted []string `json:"fc,omitempty"`
	// FlowDrops are "flow_id/step_id/node_id" of every drop-off.
	FlowDrops []string `json:"fd,omitempty"`
	// FlowSteps are "flow_id/step_id" of every step reached.
	FlowSteps []string `json:"fp,omitempty"`
	Goals     []string `json:"go,omitempty"`
	GoalValue int64    `json:"gv,omitempty"`
	Leads     uint32   `json:"le,omitempty"`
	Markers   []string `json:"mk,omitempty"`

	HandoffRequested bool      `json:"hr,omitempty"`
	HandoffAt        time.Time `json:"ha,omitzero"`
	TakenOver        bool      `json:"to,omitempty"`
	TakeoverAt       time.Time `json:"ta,omitzero"`
	Agents           []string  `json:"ag,omitempty"`
	AgentName        string    `json:"an,omitempty"`
	// AgentsPresent are the agents in the conversation now: joined and not
	// left (empty once it ended).
	AgentsPresent      []string `json:"ap,omitempty"`
	OperatorNoResponse bool     `json:"nr,omitempty"`
	// FirstResponseMS, ResponseMSSum and ResponseCount are the live agent's
	// response times as lifecycle states them in engagement_classified (at
	// the end): first response, and sum and number of replies.
	FirstResponseMS uint32 `json:"fr,omitempty"`
	ResponseMSSum   uint64 `json:"rs,omitempty"`
	ResponseCount   uint32 `json:"rc,omitempty"`
	// MaxResponseMS is the largest client-sent response_time_ms of any message.
	MaxResponseMS uint32 `json:"rm,omitempty"`
	// BotResponseMSSum and BotResponseCount sum the client-sent
	// response_time_ms of bot messages (bot latency).
	BotResponseMSSum uint64 `json:"bs,omitempty"`
	BotResponseCount uint32 `json:"bc,omitempty"`

	Engagement string `json:"en,omitempty"`
	Resolved   bool   `json:"rv,omitempty"`

	Tags    []string `json:"tg,omitempty"`
	Labels  []string `json:"lb,omitempty"`
	Flagged bool     `json:"fl,omitempty"`

	// CostMicros is the total cost when all usage is in one currency
	// (Currency); with several currencies both stay empty: Usage has them.
	CostMicros   int64  `json:"cm,omitempty"`
	Currency     string `json:"cu,omitempty"`
	InputTokens  uint64 `json:"it,omitempty"`
	OutputTokens uint64 `json:"ot,omitempty"`
	// Usage is cost and tokens per model and currency, first seen first.
	Usage []Usage `json:"us,omitempty"`

	EventCount uint32 `json:"ec"`
	// Seen holds a 64-bit hash of each applied counted event's id (messages,
	// usage, leads; up to MaxSeen), so a second stored copy of one (a retry
	// beyond JetStream's duplicate window) is not counted twice. Other
	// kinds are idempotent by themselves.
	Seen []uint64 `json:"se,omitempty"`
	// LastSeq is the stream sequence of the last event applied: the row
	// version in ClickHouse, and the guard against applying an event twice.
	LastSeq uint64 `json:"sq"`
}

// Usage is the usage of one model in one currency.
type Usage struct {
	Model        string `json:"m,omitempty"`
	Currency     string `json:"c"`
	CostMicros   int64  `json:"k,omitempty"`
	InputTokens  uint64 `json:"i,omitempty"`
	OutputTokens uint64 `json:"o,omitempty"`
}

// DefaultCurrency is the currency of usage sent without one.
const DefaultCurrency = "USD"

// New returns the empty state of a conversation.
func New(tenantID, conversationID string) *State {
	return &State{TenantID: tenantID, ConversationID: conversationID, Status: "active"}
}

// Apply folds one event with its stream sequence into s. It returns false
// (and changes nothing) when the event was applied before: an idempotence
// guard only, since the projector reads each conversation's events in
// stream order (a sequence at or below LastSeq is a replay, never a late
// event).
func (s *State) Apply(env *eventv1.Envelope, seq uint64) bool {
	if seq <= s.LastSeq {
		return false
	}
	s.LastSeq = seq
	if id := env.GetEventId(); id != "" && counted(env) {
		h := fnv.New64a()
		h.Write([]byte(id))
		sum := h.Sum64()
		if slices.Contains(s.Seen, sum) {
			return true // a second copy: only the sequence moves on
		}
		if len(s.Seen) < MaxSeen {
			s.Seen = append(s.Seen, sum)
		}
	}
	s.EventCount++
	at := env.GetOccurredAt().AsTime().UTC()
	if s.StartedAt.IsZero() {
		s.StartedAt = at
	}
	client := env.GetProducer() == "" || env.GetProducer() == "ingest"
	ended := s.Status == "ended"
	if client && !ended && at.After(s.LastActivityAt) {
		s.LastActivityAt = at
	}
	switch p := env.Payload.(type) {
	case *eventv1.Envelope_ConversationStarted:
		s.started(p.ConversationStarted)
	case *eventv1.Envelope_MessagePosted:
		if !ended {
			s.message(p.MessagePosted, at)
		}
	case *eventv1.Envelope_PageViewed:
		if u := p.PageViewed.GetUrl(); u != "" {
			if s.StartPageURL == "" {
				s.StartPageURL = u
			}
			s.PageURLs = addBounded(s.PageURLs, u, MaxPageURLs)
		}
	case *eventv1.Envelope_VariablesCaptured:
		source := EnumName(p.VariablesCaptured.GetSource().String(), "VARIABLE_SOURCE_")
		for k, v := range p.VariablesCaptured.GetVariables() {
			if _, ok := s.Variables[k]; ok || len(s.Variables) < MaxListItems {
				s.setVariable(k, v, source)
			}
		}
	case *eventv1.Envelope_FlowStarted:
		s.FlowsStarted = addBounded(s.FlowsStarted, p.FlowStarted.GetFlowId(), MaxListItems)
	case *eventv1.Envelope_FlowStep:
		f := p.FlowStep
		s.FlowSteps = addBounded(s.FlowSteps, f.GetFlowId()+"/"+f.GetStepId(), MaxListItems)
		if f.GetNodeId() != "" {
			s.Nodes = addBounded(s.Nodes, f.GetNodeId(), MaxListItems)
		}
	case *eventv1.Envelope_FlowCompleted:
		id := p.FlowCompleted.GetFlowId()
		if id == "" && len(s.FlowsStarted) > 0 {
			id = s.FlowsStarted[len(s.FlowsStarted)-1]
		}
		s.FlowsCompleted = addBounded(s.FlowsCompleted, id, MaxListItems)
	case *eventv1.Envelope_FlowDropped:
		f := p.FlowDropped
		s.FlowDrops = addBounded(s.FlowDrops, f.GetFlowId()+"/"+f.GetStepId()+"/"+f.GetNodeId(), MaxListItems)
		if f.GetNodeId() != "" {
			s.Nodes = addBounded(s.Nodes, f.GetNodeId(), MaxListItems)
		}
	case *eventv1.Envelope_GoalReached:
		g := p.GoalReached
		id := g.GetGoalId()
		if id == "" {
			id = g.GetName()
		}
		if !slices.Contains(s.Goals, id) {
			s.GoalValue += g.GetValueMicros()
		}
		s.Goals = addBounded(s.Goals, id, MaxListItems)
	case *eventv1.Envelope_LeadCaptured:
		s.Leads++
	case *eventv1.Envelope_UsageRecorded:
		s.usage(p.UsageRecorded)
	case *eventv1.Envelope_HandoffRequested:
		if !s.HandoffRequested {
			s.HandoffRequested, s.HandoffAt = true, at
		}
	case *eventv1.Envelope_AgentJoined:
		a := p.AgentJoined
		if !s.TakenOver {
			s.TakenOver, s.TakeoverAt = true, at
		}
		s.Agents = addBounded(s.Agents, a.GetAgentId(), MaxListItems)
		if id := a.GetAgentId(); !ended {
			if id == "" {
				id = "-" // an agent without an id is still present
			}
			s.AgentsPresent = addBounded(s.AgentsPresent, id, MaxListItems)
		}
		if a.GetAgentName() != "" {
			s.AgentName = a.GetAgentName()
		}
	case *eventv1.Envelope_AgentLeft:
		s.AgentsPresent = leave(s.AgentsPresent, p.AgentLeft.GetAgentId())
	case *eventv1.Envelope_OperatorNoResponse:
		s.OperatorNoResponse = true
	case *eventv1.Envelope_ConversationEnded:
		if !ended {
			e := p.ConversationEnded
			s.Status, s.EndedAt, s.EndedBy = "ended", at, e.GetEndedBy()
			s.AgentsPresent = nil
			s.EndReason = EnumName(e.GetReason().String(), "END_REASON_")
			if t := e.GetLastActivityAt(); t != nil && t.AsTime().After(s.LastActivityAt) {
				s.LastActivityAt = t.AsTime().UTC()
			}
		}
	case *eventv1.Envelope_EngagementClassified:
		e := p.EngagementClassified
		s.Engagement = EnumName(e.GetEngagement().String(), "ENGAGEMENT_")
		s.Resolved = e.GetResolved()
		s.FirstResponseMS, s.ResponseMSSum, s.ResponseCount = e.GetFirstResponseMs(), e.GetAgentResponseMsSum(), e.GetAgentReplies()
	case *eventv1.Envelope_TagApplied:
		s.Tags = addBounded(s.Tags, p.TagApplied.GetTag(), MaxListItems)
	case *eventv1.Envelope_TagRemoved:
		s.Tags = remove(s.Tags, p.TagRemoved.GetTag())
	case *eventv1.Envelope_LabelAdded:
		s.Labels = addBounded(s.Labels, p.LabelAdded.GetLabel(), MaxListItems)
	case *eventv1.Envelope_LabelRemoved:
		s.Labels = remove(s.Labels, p.LabelRemoved.GetLabel())
	case *eventv1.Envelope_Flagged:
		s.Flagged = true
	case *eventv1.Envelope_Unflagged:
		s.Flagged = false
	case *eventv1.Envelope_MarkerAdded:
		s.Markers = addBounded(s.Markers, p.MarkerAdded.GetMarker(), MaxListItems)
	case *eventv1.Envelope_LocationResolved:
		s.location(p.LocationResolved.GetLocation())
	}
	return true
}

func (s *State) started(cs *eventv1.ConversationStarted) {
	setIf := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	setIf(&s.BotID, cs.GetBotId())
	if cs.GetChannel() != eventv1.Channel_CHANNEL_UNSPECIFIED {
		s.Channel = EnumName(cs.GetChannel().String(), "CHANNEL_")
	}
	if cs.GetPlatform() != eventv1.Platform_PLATFORM_UNSPECIFIED {
		s.Platform = EnumName(cs.GetPlatform().String(), "PLATFORM_")
	}
	if cs.GetType() != eventv1.ConversationType_CONVERSATION_TYPE_UNSPECIFIED {
		s.Type = EnumName(cs.GetType().String(), "CONVERSATION_TYPE_")
	}
	setIf(&s.DeviceType, cs.GetDeviceType())
	v := cs.GetVisitor()
	setIf(&s.VisitorToken, v.GetToken())
	setIf(&s.VisitorName, v.GetDisplayName())
	setIf(&s.Locale, v.GetLocale())
	s.location(cs.GetLocation())
	if u := cs.GetPageUrl(); u != "" {
		s.StartPageURL = u
		s.PageURLs = addBounded(s.PageURLs, u, MaxPageURLs)
	}
	setIf(&s.Referrer, cs.GetReferrer())
	for k, val := range cs.GetVariables() {
		if _, ok := s.Variables[k]; !ok && len(s.Variables) < MaxListItems {
			s.setVariable(k, val, "pre_chat_form")
		}
	}
	if cs.GetDebugEnabled() {
		s.DebugEnabled = true
	}
}

func (s *State) setVariable(k, v, source string) {
	if s.Variables == nil {
		s.Variables = map[string]string{}
	}
	s.Variables[k] = v
	if source == "" {
		delete(s.VariableSources, k)
		return
	}
	if s.VariableSources == nil {
		s.VariableSources = map[string]string{}
	}
	s.VariableSources[k] = source
}

// usage adds a usage record to its model's line in its currency, and keeps
// the conversation's total only while every line has the same currency.
func (s *State) usage(u *eventv1.UsageRecorded) {
	s.Usage = s.UsageLines()
	s.InputTokens += u.GetInputTokens()
	s.OutputTokens += u.GetOutputTokens()
	s.PaidMessages += u.GetPaidMessages()
	cur := u.GetCurrency()
	if cur == "" {
		cur = DefaultCurrency
	}
	i := slices.IndexFunc(s.Usage, func(l Usage) bool { return l.Model == u.GetModel() && l.Currency == cur })
	if i < 0 {
		if len(s.Usage) >= MaxListItems {
			i = len(s.Usage) - 1 // the last line takes what does not fit, when in its currency
			if s.Usage[i].Currency != cur {
				return
			}
			s.Usage[i].Model = "other"
		} else {
			s.Usage = append(s.Usage, Usage{Model: u.GetModel(), Currency: cur})
			i = len(s.Usage) - 1
		}
	}
	l := &s.Usage[i]
	l.CostMicros += u.GetCostMicros()
	l.InputTokens += u.GetInputTokens()
	l.OutputTokens += u.GetOutputTokens()
	s.CostMicros, s.Currency = 0, ""
	for _, l := range s.Usage {
		if s.Currency != "" && l.Currency != s.Currency {
			s.CostMicros, s.Currency = 0, ""
			return
		}
		s.Currency = l.Currency
		s.CostMicros += l.CostMicros
	}
}

func (s *State) location(l *eventv1.Location) {
	if l.GetCountry() == "" && l.GetRegion() == "" && l.GetCity() == "" {
		return
	}
	s.Country, s.Region, s.City = l.GetCountry(), l.GetRegion(), l.GetCity()
}

func (s *State) message(m *eventv1.MessagePosted, at time.Time) {
	role := EnumName(m.GetRole().String(), "ROLE_")
	switch m.GetRole() {
	case eventv1.Role_ROLE_VISITOR:
		s.VisitorMessages++
	case eventv1.Role_ROLE_BOT:
		s.BotMessages++
		if ms := m.GetResponseTimeMs(); ms > 0 {
			s.BotResponseCount++
			s.BotResponseMSSum += uint64(ms)
		}
	case eventv1.Role_ROLE_AGENT:
		s.AgentMessages++
		if id := m.GetAgentId(); id != "" {
			s.Agents = addBounded(s.Agents, id, MaxListItems)
		}
	default:
		s.SystemMessages++
	}
	if ms := m.GetResponseTimeMs(); ms > s.MaxResponseMS {
		s.MaxResponseMS = ms
	}
	if m.GetUnidentified() {
		s.UnidentifiedCount++
	}
	if m.GetPaid() {
		s.PaidMessages++
	}
	if name := m.GetIntent().GetName(); name != "" {
		s.Intents = addBounded(s.Intents, name, MaxListItems)
	}
	if n := m.GetNodeId(); n != "" {
		s.Nodes = addBounded(s.Nodes, n, MaxListItems)
	}
	if !at.Before(s.LastMessageAt) {
		s.LastMessageAt, s.LastMessageRole = at, role
		s.LastMessageText = truncate(m.GetText(), maxTextChars)
	}
}

// counted reports whether applying env twice would count it twice.
func counted(env *eventv1.Envelope) bool {
	switch env.Payload.(type) {
	case *eventv1.Envelope_MessagePosted, *eventv1.Envelope_UsageRecorded, *eventv1.Envelope_LeadCaptured:
		return true
	}
	return false
}

// UsageLines is Usage; for a state saved before usage was kept per model,
// one line without model holding its totals.
func (s *State) UsageLines() []Usage {
	if len(s.Usage) > 0 || (s.CostMicros == 0 && s.InputTokens == 0 && s.OutputTokens == 0) {
		return s.Usage
	}
	cur := s.Currency
	if cur == "" {
		cur = DefaultCurrency
	}
	return []Usage{{Currency: cur, CostMicros: s.CostMicros, InputTokens: s.InputTokens, OutputTokens: s.OutputTokens}}
}

// MessageCount is the number of messages of every role.
func (s *State) MessageCount() uint32 {
	return s.VisitorMessages + s.BotMessages + s.AgentMessages + s.SystemMessages
}

// EnumName turns "CHANNEL_WEB_WIDGET" into "web_widget" given the prefix.
func EnumName(full, prefix string) string {
	n := strings.ToLower(strings.TrimPrefix(full, prefix))
	if n == "unspecified" {
		return ""
	}
	return n
}

func addBounded(list []string, v string, limit int) []string {
	if v == "" || slices.Contains(list, v) || len(list) >= limit {
		return list
	}
	return append(list, v)
}

func remove(list []string, v string) []string {
	return slices.DeleteFunc(list, func(x string) bool { return x == v })
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// leave removes an agent from the present ones; an AgentLeft without an
// agent id means every agent left.
func leave(present []string, agent string) []string {
	if agent == "" {
		return nil
	}
	return remove(present, agent)
}
