package facts

import (
	"github.com/parley-dev/parley/libs/eventbus"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
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
	if f, ok := fieldByName[name]; ok {
		return f
	}
	return AllFields
}

// fieldByName maps RuleConversation's field names to their sets, built
// once from the descriptor.
var fieldByName = func() map[string]Fields {
	fds := (&taggingv1.RuleConversation{}).ProtoReflect().Descriptor().Fields()
	m := make(map[string]Fields, fds.Len())
	for i := range fds.Len() {
		if fd := fds.Get(i); fd.Number() < 64 {
			m[string(fd.Name())] = 1 << uint(fd.Number())
		}
	}
	return m
}()

func fields(names ...string) Fields {
	var f Fields
	for _, n := range names {
		f |= Field(n)
	}
	return f
}

// changedBy is the set of fields an event of kind may change, looked up in
// a table computed once per kind (Apply runs for every event).
func changedBy(kind string) Fields {
	if f, ok := changedByKind[kind]; ok {
		return f
	}
	return declaredChanges(kind)
}

var changedByKind = func() map[string]Fields {
	m := map[string]Fields{}
	for _, k := range eventbus.Kinds() {
		m[k] = declaredChanges(k)
	}
	return m
}()

// declaredChanges is the set of fields an event of kind may change. Every
// folded event changes `events`. TestChangedFieldsAreDeclared keeps it true.
func declaredChanges(kind string) Fields {
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
