package facts

import (
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Fields is a set of RuleConversation fields (bit n is field number n). It
// says which fields an event changed and which fields a rule reads, so that
// a rule is only evaluated again after an event that changed what it reads.
type Fields uint64

// AllFields is every field.
const AllFields = ^Fields(0)

// Field returns the set holding the named RuleConversation field
// (AllFields for an unknown name, to stay on the safe side).
func Field(name string) Fields {
	fd := (&taggingv1.RuleConversation{}).ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
	if fd == nil || fd.Number() >= 64 {
		return AllFields
	}
	return 1 << uint(fd.Number())
}

func fields(names ...string) Fields {
	var f Fields
	for _, n := range names {
		f |= Field(n)
	}
	return f
}

// changedBy is the set of fields an event of kind may change. Every folded
// event changes `events`. TestChangedFieldsAreDeclared keeps it true.
func changedBy(kind string) Fields {
	f := Field("events")
	switch kind {
	case "conversation_started":
		f |= fields("bot_id", "channel", "platform", "type", "locale", "country", "variables")
	case "message_posted":
		f |= fields("visitor_messages", "bot_messages", "agent_messages", "unidentified_count", "visitor_replied",
			"max_response_ms", "intents", "messages")
	case "variables_captured":
		f |= Field("variables")
	case "flow_started":
		f |= Field("flows_started")
	case "flow_completed":
		f |= Field("flows_completed")
	case "flow_dropped":
		f |= Field("flows_dropped")
	case "goal_reached":
		f |= Field("goals")
	case "lead_captured":
		f |= Field("leads_captured")
	case "usage_recorded":
		f |= fields("cost_micros", "input_tokens", "output_tokens")
	case "handoff_requested":
		f |= Field("handoff_requested")
	case "agent_joined":
		f |= Field("agent_joined")
	case "operator_no_response":
		f |= Field("operator_no_response")
	case "conversation_ended":
		f |= fields("ended", "end_reason")
	case "engagement_classified":
		f |= Field("engagement")
	case "location_resolved":
		f |= Field("country")
	}
	return f
}
