// Package evtest builds conversation events for tests and
// benchmarks. Event ids are deterministic per conversation and position, so
// building the same conversation twice yields the same ids.
package evtest

import (
	"strconv"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Conv builds the events of one conversation.
type Conv struct {
	Tenant, ID string
	n          int
	at         time.Time
}

// New starts building a conversation.
func New(tenant, id string) *Conv {
	return &Conv{Tenant: tenant, ID: id, at: time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)}
}

// Event wraps a payload in an envelope produced by ingest.
func (c *Conv) Event(p any) *eventv1.Envelope {
	c.n++
	c.at = c.at.Add(time.Second)
	env := &eventv1.Envelope{
		EventId: eventbus.ClientEventID(c.Tenant, c.ID, "e"+strconv.Itoa(c.n)), TenantId: c.Tenant, ConversationId: c.ID,
		OccurredAt: timestamppb.New(c.at), RecordedAt: timestamppb.New(c.at), Producer: "ingest",
	}
	switch v := p.(type) {
	case *eventv1.ConversationStarted:
		env.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: v}
	case *eventv1.MessagePosted:
		if v.MessageId == "" {
			v.MessageId = "m" + strconv.Itoa(c.n)
		}
		env.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: v}
	case *eventv1.VariablesCaptured:
		env.Payload = &eventv1.Envelope_VariablesCaptured{VariablesCaptured: v}
	case *eventv1.FlowStarted:
		env.Payload = &eventv1.Envelope_FlowStarted{FlowStarted: v}
	case *eventv1.FlowStep:
		env.Payload = &eventv1.Envelope_FlowStep{FlowStep: v}
	case *eventv1.FlowCompleted:
		env.Payload = &eventv1.Envelope_FlowCompleted{FlowCompleted: v}
	case *eventv1.FlowDropped:
		env.Payload = &eventv1.Envelope_FlowDropped{FlowDropped: v}
	case *eventv1.GoalReached:
		env.Payload = &eventv1.Envelope_GoalReached{GoalReached: v}
	case *eventv1.UsageRecorded:
		env.Payload = &eventv1.Envelope_UsageRecorded{UsageRecorded: v}
	case *eventv1.HandoffRequested:
		env.Payload = &eventv1.Envelope_HandoffRequested{HandoffRequested: v}
	case *eventv1.AgentJoined:
		env.Payload = &eventv1.Envelope_AgentJoined{AgentJoined: v}
	case *eventv1.OperatorNoResponse:
		env.Payload = &eventv1.Envelope_OperatorNoResponse{OperatorNoResponse: v}
		env.Producer = "lifecycle"
	case *eventv1.ConversationEnded:
		env.Payload = &eventv1.Envelope_ConversationEnded{ConversationEnded: v}
		env.Producer = "lifecycle"
	case *eventv1.EngagementClassified:
		env.Payload = &eventv1.Envelope_EngagementClassified{EngagementClassified: v}
		env.Producer = "lifecycle"
	case *eventv1.DebugTrace:
		env.Payload = &eventv1.Envelope_DebugTrace{DebugTrace: v}
	case *eventv1.TagApplied:
		env.Payload = &eventv1.Envelope_TagApplied{TagApplied: v}
		env.Producer = "tagging"
	case *eventv1.LeadCaptured:
		env.Payload = &eventv1.Envelope_LeadCaptured{LeadCaptured: v}
	default:
		panic("evtest: unsupported payload")
	}
	env.Kind = eventbus.Kind(env)
	return env
}

// Started is conversation_started on the web widget, desktop, live.
func (c *Conv) Started(bot string) *eventv1.Envelope {
	return c.Event(&eventv1.ConversationStarted{BotId: bot, Channel: eventv1.Channel_CHANNEL_WEB_WIDGET,
		Platform: eventv1.Platform_PLATFORM_DESKTOP, Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE})
}

// Visitor is a visitor message.
func (c *Conv) Visitor(text string) *eventv1.Envelope {
	return c.Event(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text})
}

// VisitorIntent is a visitor message classified as intent.
func (c *Conv) VisitorIntent(text, intent string) *eventv1.Envelope {
	return c.Event(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text, Intent: &eventv1.Intent{Name: intent, Confidence: 0.9}})
}

// Bot is a bot message answering after responseMS.
func (c *Conv) Bot(text string, responseMS uint32) *eventv1.Envelope {
	return c.Event(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: text, ResponseTimeMs: responseMS})
}

// Fallback is a bot message marked unidentified.
func (c *Conv) Fallback(text string) *eventv1.Envelope {
	return c.Event(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: text, Unidentified: true})
}

// Agent is an agent message answering after responseMS.
func (c *Conv) Agent(text string, responseMS uint32) *eventv1.Envelope {
	return c.Event(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, Text: text, ResponseTimeMs: responseMS, AgentId: "a1"})
}

// Ended is lifecycle's conversation_ended.
func (c *Conv) Ended(reason eventv1.EndReason) *eventv1.Envelope {
	return c.Event(&eventv1.ConversationEnded{Reason: reason})
}
