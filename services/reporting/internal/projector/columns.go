package projector

import (
	"fmt"
	"reflect"
	"slices"
	"time"

	"github.com/parley-dev/parley/services/reporting/internal/convstate"
)

// The inserts hand ClickHouse whole columns (typed slices) rather than rows
// of boxed values: no allocation per value, and the slices are reused from
// batch to batch.

const eventColumns = `tenant_id, conversation_id, event_id, kind, stream_seq, occurred_at, occurred_at_us, recorded_at, producer, causation_id, correlation_id, trace_id, payload_json`

type eventCols struct {
	TenantID, ConversationID, EventID, Kind []string
	StreamSeq                               []uint64
	OccurredAt                              []time.Time
	OccurredAtUS                            []int64
	RecordedAt                              []time.Time
	Producer, CausationID, CorrelationID    []string
	TraceID, PayloadJSON                    []string
}

func (c *eventCols) add(r *EventRow) {
	c.TenantID = append(c.TenantID, r.TenantID)
	c.ConversationID = append(c.ConversationID, r.ConversationID)
	c.EventID = append(c.EventID, r.EventID)
	c.Kind = append(c.Kind, r.Kind)
	c.StreamSeq = append(c.StreamSeq, r.StreamSeq)
	c.OccurredAt = append(c.OccurredAt, r.OccurredAt)
	c.OccurredAtUS = append(c.OccurredAtUS, r.OccurredAtUS)
	c.RecordedAt = append(c.RecordedAt, r.RecordedAt)
	c.Producer = append(c.Producer, r.Producer)
	c.CausationID = append(c.CausationID, r.CausationID)
	c.CorrelationID = append(c.CorrelationID, r.CorrelationID)
	c.TraceID = append(c.TraceID, r.TraceID)
	c.PayloadJSON = append(c.PayloadJSON, r.PayloadJSON)
}

// columns lists the columns in the order of eventColumns.
func (c *eventCols) columns() []any {
	return []any{c.TenantID, c.ConversationID, c.EventID, c.Kind, c.StreamSeq, c.OccurredAt, c.OccurredAtUS, c.RecordedAt,
		c.Producer, c.CausationID, c.CorrelationID, c.TraceID, c.PayloadJSON}
}

const messageColumns = `tenant_id, conversation_id, event_id, message_id, role, text, intent, intent_confidence, unidentified, flow_id, node_id, agent_id, response_time_ms, paid, occurred_at, occurred_at_us, recorded_at, stream_seq, trace_id`

type messageCols struct {
	TenantID, ConversationID, EventID, MessageID []string
	Role                                         []int8
	Text, Intent                                 []string
	IntentConfidence                             []float32
	Unidentified                                 []uint8
	FlowID, NodeID, AgentID                      []string
	ResponseTimeMS                               []uint32
	Paid                                         []uint8
	OccurredAt                                   []time.Time
	OccurredAtUS                                 []int64
	RecordedAt                                   []time.Time
	StreamSeq                                    []uint64
	TraceID                                      []string
}

func (c *messageCols) add(r *MessageRow) {
	c.TenantID = append(c.TenantID, r.TenantID)
	c.ConversationID = append(c.ConversationID, r.ConversationID)
	c.EventID = append(c.EventID, r.EventID)
	c.MessageID = append(c.MessageID, r.MessageID)
	c.Role = append(c.Role, roleEnum(r.Role))
	c.Text = append(c.Text, r.Text)
	c.Intent = append(c.Intent, r.Intent)
	c.IntentConfidence = append(c.IntentConfidence, r.IntentConfidence)
	c.Unidentified = append(c.Unidentified, r.Unidentified)
	c.FlowID = append(c.FlowID, r.FlowID)
	c.NodeID = append(c.NodeID, r.NodeID)
	c.AgentID = append(c.AgentID, r.AgentID)
	c.ResponseTimeMS = append(c.ResponseTimeMS, r.ResponseTimeMS)
	c.Paid = append(c.Paid, r.Paid)
	c.OccurredAt = append(c.OccurredAt, r.OccurredAt)
	c.OccurredAtUS = append(c.OccurredAtUS, r.OccurredAtUS)
	c.RecordedAt = append(c.RecordedAt, r.RecordedAt)
	c.StreamSeq = append(c.StreamSeq, r.StreamSeq)
	c.TraceID = append(c.TraceID, r.TraceID)
}

// columns lists the columns in the order of messageColumns.
func (c *messageCols) columns() []any {
	return []any{c.TenantID, c.ConversationID, c.EventID, c.MessageID, c.Role, c.Text, c.Intent, c.IntentConfidence, c.Unidentified,
		c.FlowID, c.NodeID, c.AgentID, c.ResponseTimeMS, c.Paid, c.OccurredAt, c.OccurredAtUS, c.RecordedAt, c.StreamSeq, c.TraceID}
}

// roleEnum is the value of role in the messages table's Enum8.
func roleEnum(role string) int8 {
	switch role {
	case "visitor":
		return 1
	case "bot":
		return 2
	case "agent":
		return 3
	case "system":
		return 4
	default:
		return 0
	}
}

// statusEnum is the value of status in the conversations table's Enum8.
func statusEnum(status string) (int8, error) {
	switch status {
	case "active":
		return 1, nil
	case "ended":
		return 2, nil
	}
	return 0, fmt.Errorf("projector: unknown conversation status %q", status)
}

// convCols holds conversations rows column by column, in the order of
// ConversationColumns; ConversationValues is the same row as values.
type convCols struct {
	TenantID, ConversationID                                                  []string
	StartedAt                                                                 []time.Time
	StartedAtUS                                                               []int64
	LastActivityAt, EndedAt                                                   []time.Time
	Status                                                                    []int8
	EndReason, EndedBy                                                        []string
	BotID, Channel, Platform, Type, DeviceType                                []string
	VisitorToken, VisitorName, Locale, Country, Region, City                  []string
	StartPageURL, Referrer                                                    []string
	PageURLs, VariableKeys, VariableValues                                    [][]string
	MessageCount, VisitorMessages, BotMessages, AgentMessages, SystemMessages []uint32
	UnidentifiedCount, PaidMessages                                           []uint32
	LastMessageText, LastMessageRole                                          []string
	LastMessageAt                                                             []time.Time
	Intents, Nodes                                                            [][]string
	FlowsStarted, FlowsCompleted, FlowSteps, FlowDrops, Goals                 [][]string
	GoalValueMicros                                                           []int64
	Leads                                                                     []uint32
	Markers                                                                   [][]string
	HandoffRequested                                                          []uint8
	HandoffAt                                                                 []time.Time
	TakenOver                                                                 []uint8
	TakeoverAt                                                                []time.Time
	Agents                                                                    [][]string
	AgentName                                                                 []string
	AgentPresent                                                              []uint8
	OperatorNoResponse                                                        []uint8
	FirstResponseMS                                                           []uint32
	ResponseMSSum                                                             []uint64
	ResponseCount, MaxResponseMS                                              []uint32
	Engagement                                                                []string
	Resolved                                                                  []uint8
	Tags, Labels                                                              [][]string
	Flagged                                                                   []uint8
	CostMicros                                                                []int64
	Currency                                                                  []string
	InputTokens, OutputTokens                                                 []uint64
	EventCount                                                                []uint32
	Version                                                                   []uint64
}

func (c *convCols) add(s *convstate.State) error {
	status, err := statusEnum(s.Status)
	if err != nil {
		return err
	}
	keys, vals := variables(s.Variables)
	c.TenantID = append(c.TenantID, s.TenantID)
	c.ConversationID = append(c.ConversationID, s.ConversationID)
	c.StartedAt = append(c.StartedAt, chTime(s.StartedAt))
	c.StartedAtUS = append(c.StartedAtUS, s.StartedAt.UnixMicro())
	c.LastActivityAt = append(c.LastActivityAt, chTime(s.LastActivityAt))
	c.EndedAt = append(c.EndedAt, chTime(s.EndedAt))
	c.Status = append(c.Status, status)
	c.EndReason = append(c.EndReason, s.EndReason)
	c.EndedBy = append(c.EndedBy, s.EndedBy)
	c.BotID = append(c.BotID, s.BotID)
	c.Channel = append(c.Channel, s.Channel)
	c.Platform = append(c.Platform, s.Platform)
	c.Type = append(c.Type, s.Type)
	c.DeviceType = append(c.DeviceType, s.DeviceType)
	c.VisitorToken = append(c.VisitorToken, s.VisitorToken)
	c.VisitorName = append(c.VisitorName, s.VisitorName)
	c.Locale = append(c.Locale, s.Locale)
	c.Country = append(c.Country, s.Country)
	c.Region = append(c.Region, s.Region)
	c.City = append(c.City, s.City)
	c.StartPageURL = append(c.StartPageURL, s.StartPageURL)
	c.Referrer = append(c.Referrer, s.Referrer)
	c.PageURLs = append(c.PageURLs, nonNil(s.PageURLs))
	c.VariableKeys = append(c.VariableKeys, keys)
	c.VariableValues = append(c.VariableValues, vals)
	c.MessageCount = append(c.MessageCount, s.MessageCount())
	c.VisitorMessages = append(c.VisitorMessages, s.VisitorMessages)
	c.BotMessages = append(c.BotMessages, s.BotMessages)
	c.AgentMessages = append(c.AgentMessages, s.AgentMessages)
	c.SystemMessages = append(c.SystemMessages, s.SystemMessages)
	c.UnidentifiedCount = append(c.UnidentifiedCount, s.UnidentifiedCount)
	c.PaidMessages = append(c.PaidMessages, s.PaidMessages)
	c.LastMessageText = append(c.LastMessageText, s.LastMessageText)
	c.LastMessageRole = append(c.LastMessageRole, s.LastMessageRole)
	c.LastMessageAt = append(c.LastMessageAt, chTime(s.LastMessageAt))
	c.Intents = append(c.Intents, nonNil(s.Intents))
	c.Nodes = append(c.Nodes, nonNil(s.Nodes))
	c.FlowsStarted = append(c.FlowsStarted, nonNil(s.FlowsStarted))
	c.FlowsCompleted = append(c.FlowsCompleted, nonNil(s.FlowsCompleted))
	c.FlowSteps = append(c.FlowSteps, nonNil(s.FlowSteps))
	c.FlowDrops = append(c.FlowDrops, nonNil(s.FlowDrops))
	c.Goals = append(c.Goals, nonNil(s.Goals))
	c.GoalValueMicros = append(c.GoalValueMicros, s.GoalValue)
	c.Leads = append(c.Leads, s.Leads)
	c.Markers = append(c.Markers, nonNil(s.Markers))
	c.HandoffRequested = append(c.HandoffRequested, b2u(s.HandoffRequested))
	c.HandoffAt = append(c.HandoffAt, chTime(s.HandoffAt))
	c.TakenOver = append(c.TakenOver, b2u(s.TakenOver))
	c.TakeoverAt = append(c.TakeoverAt, chTime(s.TakeoverAt))
	c.Agents = append(c.Agents, nonNil(s.Agents))
	c.AgentName = append(c.AgentName, s.AgentName)
	c.AgentPresent = append(c.AgentPresent, b2u(len(s.AgentsPresent) > 0))
	c.OperatorNoResponse = append(c.OperatorNoResponse, b2u(s.OperatorNoResponse))
	c.FirstResponseMS = append(c.FirstResponseMS, s.FirstResponseMS)
	c.ResponseMSSum = append(c.ResponseMSSum, s.ResponseMSSum)
	c.ResponseCount = append(c.ResponseCount, s.ResponseCount)
	c.MaxResponseMS = append(c.MaxResponseMS, s.MaxResponseMS)
	c.Engagement = append(c.Engagement, s.Engagement)
	c.Resolved = append(c.Resolved, b2u(s.Resolved))
	c.Tags = append(c.Tags, nonNil(s.Tags))
	c.Labels = append(c.Labels, nonNil(s.Labels))
	c.Flagged = append(c.Flagged, b2u(s.Flagged))
	c.CostMicros = append(c.CostMicros, s.CostMicros)
	c.Currency = append(c.Currency, s.Currency)
	c.InputTokens = append(c.InputTokens, s.InputTokens)
	c.OutputTokens = append(c.OutputTokens, s.OutputTokens)
	c.EventCount = append(c.EventCount, s.EventCount)
	c.Version = append(c.Version, s.LastSeq)
	return nil
}

// columns lists the columns in the order of ConversationColumns.
func (c *convCols) columns() []any {
	return []any{
		c.TenantID, c.ConversationID, c.StartedAt, c.StartedAtUS, c.LastActivityAt, c.EndedAt, c.Status, c.EndReason, c.EndedBy,
		c.BotID, c.Channel, c.Platform, c.Type, c.DeviceType, c.VisitorToken, c.VisitorName, c.Locale, c.Country, c.Region, c.City,
		c.StartPageURL, c.Referrer, c.PageURLs, c.VariableKeys, c.VariableValues,
		c.MessageCount, c.VisitorMessages, c.BotMessages, c.AgentMessages, c.SystemMessages, c.UnidentifiedCount, c.PaidMessages,
		c.LastMessageText, c.LastMessageRole, c.LastMessageAt, c.Intents, c.Nodes,
		c.FlowsStarted, c.FlowsCompleted, c.FlowSteps, c.FlowDrops, c.Goals, c.GoalValueMicros, c.Leads, c.Markers,
		c.HandoffRequested, c.HandoffAt, c.TakenOver, c.TakeoverAt, c.Agents, c.AgentName, c.AgentPresent, c.OperatorNoResponse,
		c.FirstResponseMS, c.ResponseMSSum, c.ResponseCount, c.MaxResponseMS, c.Engagement, c.Resolved,
		c.Tags, c.Labels, c.Flagged, c.CostMicros, c.Currency, c.InputTokens, c.OutputTokens, c.EventCount, c.Version,
	}
}

// variables returns a conversation's variables as sorted keys and their
// values.
func variables(m map[string]string) (keys, vals []string) {
	if len(m) == 0 {
		return []string{}, []string{}
	}
	keys = make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	vals = make([]string, len(keys))
	for i, k := range keys {
		vals[i] = m[k]
	}
	return keys, vals
}

// truncate empties every slice field of the struct cols points to, keeping
// its capacity for the next batch and dropping its references (to strings
// and states of the batch before).
func truncate(cols any) {
	v := reflect.ValueOf(cols).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		f.Clear()
		f.SetLen(0)
	}
}
