package validate

import (
	"fmt"
	"strings"
	"testing"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

func started(cs *eventv1.ConversationStarted) *eventv1.Envelope {
	return &eventv1.Envelope{ConversationId: "c", Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: cs}}
}

func TestFieldLimits(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	many := map[string]string{}
	for i := range 10000 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	trace := &eventv1.DebugTrace{}
	for range 201 {
		trace.Steps = append(trace.Steps, &eventv1.DebugStep{Name: "s"})
	}
	cases := []struct {
		name  string
		env   *eventv1.Envelope
		field string
	}{
		{"huge bot id", started(&eventv1.ConversationStarted{BotId: strings.Repeat("b", 1_500_000)}), "events[2].conversation_started.bot_id"},
		{"bot id at the limit", started(&eventv1.ConversationStarted{BotId: strings.Repeat("b", 256)}), ""},
		{"10,000 variables", started(&eventv1.ConversationStarted{Variables: many}), "events[2].conversation_started.variables"},
		{"long variable key", started(&eventv1.ConversationStarted{Variables: map[string]string{strings.Repeat("k", 129): "v"}}), "events[2].conversation_started.variables"},
		{"long variable value", started(&eventv1.ConversationStarted{Variables: map[string]string{"k": strings.Repeat("v", 1025)}}), "events[2].conversation_started.variables"},
		{"NUL in a variable value", started(&eventv1.ConversationStarted{Variables: map[string]string{"k": "a\x00b"}}), "events[2].conversation_started.variables"},
		{"NUL in a visitor token", started(&eventv1.ConversationStarted{Visitor: &eventv1.Visitor{Token: "t\x00"}}), "events[2].conversation_started.visitor.token"},
		{"invalid UTF-8 in a user agent", started(&eventv1.ConversationStarted{Visitor: &eventv1.Visitor{UserAgent: "\xc3\x28"}}), "events[2].conversation_started.visitor.user_agent"},
		{"page url at the limit", started(&eventv1.ConversationStarted{PageUrl: "https://x/" + strings.Repeat("p", 2038)}), ""},
		{"page url too long", started(&eventv1.ConversationStarted{PageUrl: "https://x/" + strings.Repeat("p", 2039)}), "events[2].conversation_started.page_url"},
		{"unknown channel", started(&eventv1.ConversationStarted{Channel: 77}), "events[2].conversation_started.channel"},
		{"NUL in message text", msg("c", "hi\x00"), "events[2].message_posted.text"},
		{"long intent", &eventv1.Envelope{ConversationId: "c", Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "x", Intent: &eventv1.Intent{Name: strings.Repeat("i", 257)}}}}, "events[2].message_posted.intent.name"},
		{"too many debug steps", &eventv1.Envelope{ConversationId: "c", Payload: &eventv1.Envelope_DebugTrace{DebugTrace: trace}}, "events[2].debug_trace.steps"},
		{"NUL in a debug step", &eventv1.Envelope{ConversationId: "c", Payload: &eventv1.Envelope_DebugTrace{DebugTrace: &eventv1.DebugTrace{Steps: []*eventv1.DebugStep{{Name: "a"}, {Detail: "\x00"}}}}}, "events[2].debug_trace.steps[1].detail"},
		{"long usage model", &eventv1.Envelope{ConversationId: "c", Payload: &eventv1.Envelope_UsageRecorded{UsageRecorded: &eventv1.UsageRecorded{Model: strings.Repeat("m", 257)}}}, "events[2].usage_recorded.model"},
		{"long correlation id", func() *eventv1.Envelope { e := msg("c", "x"); e.CorrelationId = strings.Repeat("c", 129); return e }(), "events[2].correlation_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Envelope(DefaultLimits, 2, c.env, "acme", now)
			if c.field == "" {
				if v != nil {
					t.Fatalf("want valid, got %v", v)
				}
				return
			}
			if v == nil || v.Field != c.field {
				t.Fatalf("want violation on %q, got %v", c.field, v)
			}
		})
	}
}

// Every string of every kind a client may send is bounded: no field is
// forgotten, whatever is added to the contract later.
func TestEveryStringIsBounded(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	oneof := (&eventv1.Envelope{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")
	checked := 0
	for i := range oneof.Fields().Len() {
		pf := oneof.Fields().Get(i)
		if ServerOnly(string(pf.Name())) {
			continue
		}
		for j := range pf.Message().Fields().Len() {
			fd := pf.Message().Fields().Get(j)
			if fd.Kind() != protoreflect.StringKind || fd.IsList() || fd.IsMap() {
				continue
			}
			for _, bad := range []string{strings.Repeat("x", 1<<20), "a\x00b"} {
				env := &eventv1.Envelope{ConversationId: "c"}
				payload := env.ProtoReflect().Mutable(pf).Message()
				payload.Set(fd, protoreflect.ValueOfString(bad))
				if pf.Name() == "message_posted" {
					payload.Set(payload.Descriptor().Fields().ByName("role"), protoreflect.ValueOfEnum(1))
				}
				want := fmt.Sprintf("events[0].%s.%s", pf.Name(), fd.Name())
				if v := Envelope(DefaultLimits, 0, env, "acme", now); v == nil || v.Field != want {
					t.Errorf("%s = %.10q...: want a violation on %s, got %v", want, bad, want, v)
				}
				checked++
			}
		}
	}
	if checked < 40 {
		t.Fatalf("checked only %d fields", checked)
	}
}
