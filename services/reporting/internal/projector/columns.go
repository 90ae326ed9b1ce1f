package projector

import (
	"reflect"
	"time"
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
