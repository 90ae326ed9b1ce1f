// Package projector turns conversation events into ClickHouse rows and writes
// them in batches. Rows are a pure function of the event, so replaying the
// stream writes identical rows, which ReplacingMergeTree collapses.
package projector

import (
	"errors"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// EventRow is one row of the events table.
type EventRow struct {
	TenantID, ConversationID, EventID, Kind string
	StreamSeq                               uint64
	OccurredAt                              time.Time
	OccurredAtUS                            int64
	RecordedAt                              time.Time
	Producer, CausationID, CorrelationID    string
	TraceID                                 string
	PayloadJSON                             string
}

// MessageRow is one row of the messages table.
type MessageRow struct {
	TenantID, ConversationID, EventID, MessageID string
	Role                                         string
	Text, Intent                                 string
	IntentConfidence                             float32
	Unidentified                                 uint8
	FlowID, NodeID, AgentID                      string
	ResponseTimeMS                               uint32
	Paid                                         uint8
	OccurredAt                                   time.Time
	OccurredAtUS                                 int64
	RecordedAt                                   time.Time
	StreamSeq                                    uint64
	TraceID                                      string
}

// Rows holds the rows produced by a batch of events.
type Rows struct {
	Events   []EventRow
	Messages []MessageRow
	buf      []byte // payload JSON scratch
}

var payloadOneof = (&eventv1.Envelope{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")

// Add appends the rows of one event.
func (r *Rows) Add(env *eventv1.Envelope, seq uint64, traceID string) {
	occurred := env.GetOccurredAt().AsTime().UTC()
	recorded := env.GetRecordedAt().AsTime().UTC()
	payload := ""
	if fd := env.ProtoReflect().WhichOneof(payloadOneof); fd != nil {
		msg := env.ProtoReflect().Get(fd).Message()
		b, err := appendPayloadJSON(r.buf[:0], msg)
		if errors.Is(err, errUnsupported) {
			b, err = protojsonPayload(msg.Interface())
		}
		if err == nil {
			payload = string(b)
		}
		if cap(b) <= 64<<10 {
			r.buf = b
		}
	}
	r.Events = append(r.Events, EventRow{
		TenantID: env.TenantId, ConversationID: env.ConversationId, EventID: env.EventId, Kind: eventbus.Kind(env),
		StreamSeq: seq, OccurredAt: occurred, OccurredAtUS: occurred.UnixMicro(), RecordedAt: recorded,
		Producer: env.Producer, CausationID: env.CausationId, CorrelationID: env.CorrelationId, TraceID: traceID,
		PayloadJSON: payload,
	})
	if m := env.GetMessagePosted(); m != nil {
		r.Messages = append(r.Messages, MessageRow{
			TenantID: env.TenantId, ConversationID: env.ConversationId, EventID: env.EventId, MessageID: m.MessageId,
			Role: roleName(m.Role), Text: m.Text, Intent: m.GetIntent().GetName(), IntentConfidence: float32(m.GetIntent().GetConfidence()),
			Unidentified: b2u(m.Unidentified), FlowID: m.FlowId, NodeID: m.NodeId, AgentID: m.AgentId,
			ResponseTimeMS: m.ResponseTimeMs, Paid: b2u(m.Paid), OccurredAt: occurred, OccurredAtUS: occurred.UnixMicro(),
			RecordedAt: recorded, StreamSeq: seq, TraceID: traceID,
		})
	}
}

// protojsonPayload is the payload's JSON by protojson, for message types
// appendPayloadJSON does not know.
func protojsonPayload(msg proto.Message) ([]byte, error) {
	if cs, ok := msg.(*eventv1.ConversationStarted); ok && cs.GetVisitor().GetIp() != "" {
		c := proto.Clone(cs).(*eventv1.ConversationStarted)
		c.Visitor.Ip = ""
		msg = c
	}
	return protojson.MarshalOptions{UseProtoNames: true}.Marshal(msg)
}

// roleName maps ROLE_VISITOR to "visitor", matching the Enum8 in ClickHouse.
func roleName(r eventv1.Role) string {
	switch r {
	case eventv1.Role_ROLE_VISITOR:
		return "visitor"
	case eventv1.Role_ROLE_BOT:
		return "bot"
	case eventv1.Role_ROLE_AGENT:
		return "agent"
	case eventv1.Role_ROLE_SYSTEM:
		return "system"
	default:
		return "unspecified"
	}
}

// RoleFromName is the inverse of roleName.
func RoleFromName(s string) eventv1.Role {
	switch s {
	case "visitor":
		return eventv1.Role_ROLE_VISITOR
	case "bot":
		return eventv1.Role_ROLE_BOT
	case "agent":
		return eventv1.Role_ROLE_AGENT
	case "system":
		return eventv1.Role_ROLE_SYSTEM
	default:
		return eventv1.Role_ROLE_UNSPECIFIED
	}
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
