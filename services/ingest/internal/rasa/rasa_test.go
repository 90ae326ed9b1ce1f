package rasa

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ev builds one broker message for sender "s1" at a fixed time.
func ev(typ, extra string) string {
	if extra != "" {
		extra = ", " + extra
	}
	return `{"sender_id": "s1", "event": "` + typ + `", "timestamp": 1767612345.118734` + extra + `}`
}

func mustMap(t *testing.T, opts Options, raw string) Result {
	t.Helper()
	res, err := Map(opts, []byte(raw))
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	return res
}

// payloadOnly strips the fields every envelope carries.
func payloadOnly(env *eventv1.Envelope) *eventv1.Envelope {
	c := proto.Clone(env).(*eventv1.Envelope)
	c.ConversationId, c.OccurredAt, c.ClientEventId, c.Kind = "", nil, "", ""
	return c
}

func msg(role eventv1.Role, id, text string, intent *eventv1.Intent, unidentified bool) *eventv1.Envelope {
	return &eventv1.Envelope{Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{
		MessageId: id, Role: role, Text: text, Intent: intent, Unidentified: unidentified}}}
}

func trace(name, detail string, isErr bool) *eventv1.Envelope {
	return debugTrace(&eventv1.DebugStep{Name: name, Detail: detail, Error: isErr})
}

func vars(name, value string) *eventv1.Envelope {
	return &eventv1.Envelope{Payload: &eventv1.Envelope_VariablesCaptured{VariablesCaptured: &eventv1.VariablesCaptured{
		Variables: map[string]string{name: value}, Source: eventv1.VariableSource_VARIABLE_SOURCE_EXTRACTED}}}
}

func started(channel eventv1.Channel, variables map[string]string) *eventv1.Envelope {
	return &eventv1.Envelope{Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{
		BotId: "moodbot", Channel: channel, Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE, Variables: variables}}}
}

// derived marks an expected message id that Map derives (the client event id).
const derived = "<derived>"

func TestMapRows(t *testing.T) {
	bot := func(text string, unidentified bool) *eventv1.Envelope {
		return msg(eventv1.Role_ROLE_BOT, derived, text, nil, unidentified)
	}
	cases := []struct {
		name string
		in   string
		opts Options
		want *eventv1.Envelope // nil: skipped
		skip string            // expected reason when skipped
	}{
		// session_started
		{"session started", ev("session_started", `"metadata": {"model_id": "m1", "assistant_id": "a1"}`), Options{},
			started(eventv1.Channel_CHANNEL_API, map[string]string{"model_id": "m1", "assistant_id": "a1"}), ""},
		{"session started scalars only", ev("session_started", `"metadata": {"plan": "pro", "age": 42, "vip": true, "nested": {"a": 1}, "none": null}`), Options{},
			started(eventv1.Channel_CHANNEL_API, map[string]string{"plan": "pro", "age": "42", "vip": "true"}), ""},
		{"session started no metadata", ev("session_started", ""), Options{}, started(eventv1.Channel_CHANNEL_API, nil), ""},
		{"session started rest", ev("session_started", `"input_channel": "rest"`), Options{}, started(eventv1.Channel_CHANNEL_WEB_WIDGET, nil), ""},
		{"session started socketio", ev("session_started", `"input_channel": "socketio"`), Options{}, started(eventv1.Channel_CHANNEL_WEB_WIDGET, nil), ""},
		{"session started facebook", ev("session_started", `"input_channel": "facebook"`), Options{}, started(eventv1.Channel_CHANNEL_FACEBOOK, nil), ""},
		{"session started telegram", ev("session_started", `"input_channel": "telegram"`), Options{}, started(eventv1.Channel_CHANNEL_TELEGRAM, nil), ""},
		{"session started twilio", ev("session_started", `"input_channel": "twilio"`), Options{}, started(eventv1.Channel_CHANNEL_SMS, nil), ""},
		{"session started whatsapp", ev("session_started", `"input_channel": "whatsapp"`), Options{}, started(eventv1.Channel_CHANNEL_WHATSAPP, nil), ""},
		{"session started unknown channel", ev("session_started", `"input_channel": "my_custom"`), Options{}, started(eventv1.Channel_CHANNEL_API, nil), ""},
		{"session started option channel wins", ev("session_started", `"input_channel": "rest"`), Options{Channel: eventv1.Channel_CHANNEL_WHATSAPP},
			started(eventv1.Channel_CHANNEL_WHATSAPP, nil), ""},

		// user
		{"user", ev("user", `"text": "hi", "parse_data": {"intent": {"name": "greet", "confidence": 0.9987}, "message_id": "pm"}, "input_channel": "rest", "message_id": "m1"`), Options{},
			msg(eventv1.Role_ROLE_VISITOR, "m1", "hi", &eventv1.Intent{Name: "greet", Confidence: 0.9987}, false), ""},
		{"user message id from parse_data", ev("user", `"text": "hi", "parse_data": {"intent": {"name": "greet", "confidence": 0.5}, "message_id": "pm"}`), Options{},
			msg(eventv1.Role_ROLE_VISITOR, "pm", "hi", &eventv1.Intent{Name: "greet", Confidence: 0.5}, false), ""},
		{"user derived message id", ev("user", `"text": "hi"`), Options{},
			msg(eventv1.Role_ROLE_VISITOR, derived, "hi", nil, false), ""},
		{"user nlu_fallback", ev("user", `"text": "blorf", "parse_data": {"intent": {"name": "nlu_fallback", "confidence": 0.3}}, "message_id": "m2"`), Options{},
			msg(eventv1.Role_ROLE_VISITOR, "m2", "blorf", &eventv1.Intent{Name: "nlu_fallback", Confidence: 0.3}, true), ""},
		{"user out_of_scope", ev("user", `"text": "pizza?", "parse_data": {"intent": {"name": "out_of_scope", "confidence": 0.9}}, "message_id": "m3"`), Options{},
			msg(eventv1.Role_ROLE_VISITOR, "m3", "pizza?", &eventv1.Intent{Name: "out_of_scope", Confidence: 0.9}, true), ""},
		{"user custom unidentified intents", ev("user", `"text": "blorf", "parse_data": {"intent": {"name": "nlu_fallback", "confidence": 0.3}}, "message_id": "m2"`),
			Options{UnidentifiedIntents: []string{"chitchat"}},
			msg(eventv1.Role_ROLE_VISITOR, "m2", "blorf", &eventv1.Intent{Name: "nlu_fallback", Confidence: 0.3}, false), ""},
		{"user no unidentified intents", ev("user", `"text": "x", "parse_data": {"intent": {"name": "out_of_scope", "confidence": 1}}, "message_id": "m2"`),
			Options{UnidentifiedIntents: []string{}},
			msg(eventv1.Role_ROLE_VISITOR, "m2", "x", &eventv1.Intent{Name: "out_of_scope", Confidence: 1}, false), ""},
		{"user intent only", ev("user", `"text": null, "parse_data": {"intent": {"name": "greet", "confidence": 1.0}}, "message_id": "m4"`), Options{},
			msg(eventv1.Role_ROLE_VISITOR, "m4", "", &eventv1.Intent{Name: "greet", Confidence: 1}, false), ""},
		{"user text from parse_data", ev("user", `"parse_data": {"text": "hello", "intent": {}}, "message_id": "m5"`), Options{},
			msg(eventv1.Role_ROLE_VISITOR, "m5", "hello", nil, false), ""},
		{"user CALM without intent", ev("user", `"text": "send money", "parse_data": {"intent": {}, "commands": [{"command": "start flow", "flow": "transfer_money"}]}, "message_id": "m6"`), Options{},
			msg(eventv1.Role_ROLE_VISITOR, "m6", "send money", nil, false), ""},
		{"user empty", ev("user", `"text": "", "parse_data": {"intent": {}}`), Options{}, nil, ReasonEmptyUser},
		{"user external", ev("user", `"text": "EXTERNAL: remind", "parse_data": {"intent": {"name": "remind", "confidence": 1.0}}, "metadata": {"is_external": true}`), Options{}, nil, ReasonExternalUser},

		// bot
		{"bot", ev("bot", `"text": "Hey! How are you?", "data": {"buttons": null}, "metadata": {"utter_action": "utter_greet"}`), Options{}, bot("Hey! How are you?", false), ""},
		{"bot text keeps buttons out", ev("bot", `"text": "Hey!", "data": {"buttons": [{"title": "Great", "payload": "/mood_great"}]}`), Options{}, bot("Hey!", false), ""},
		{"bot fallback", ev("bot", `"text": "Sorry, I didn't get that.", "metadata": {"utter_action": "utter_default"}`), Options{}, bot("Sorry, I didn't get that.", true), ""},
		{"bot legacy template_name", ev("bot", `"text": "Sorry.", "metadata": {"template_name": "utter_default"}`), Options{}, bot("Sorry.", true), ""},
		{"bot custom fallback actions", ev("bot", `"text": "Sorry.", "metadata": {"utter_action": "utter_default"}`), Options{FallbackActions: []string{"utter_ask_rephrase"}}, bot("Sorry.", false), ""},
		{"bot buttons only", ev("bot", `"text": null, "data": {"buttons": [{"title": "Yes", "payload": "/affirm"}, {"payload": "/deny"}]}`), Options{}, bot("[buttons: Yes | /deny]", false), ""},
		{"bot image only", ev("bot", `"text": "", "data": {"image": "https://i.imgur.com/nGF1K8f.jpg", "attachment": "https://i.imgur.com/nGF1K8f.jpg"}`), Options{},
			bot("[image: https://i.imgur.com/nGF1K8f.jpg]", false), ""},
		{"bot attachment", ev("bot", `"data": {"attachment": {"type": "file", "url": "x"}}`), Options{}, bot("[attachment]", false), ""},
		{"bot quick replies and carousel", ev("bot", `"data": {"quick_replies": [{"title": "A"}], "elements": [{}, {}]}`), Options{}, bot("[quick replies: A] [carousel: 2 elements]", false), ""},
		{"bot custom", ev("bot", `"data": {"custom": {"blocks": []}}`), Options{}, bot("[custom payload]", false), ""},
		{"bot empty", ev("bot", `"text": null, "data": {"elements": null, "quick_replies": null, "buttons": null, "attachment": null, "image": null, "custom": null}`), Options{}, nil, ReasonEmptyBot},

		// action
		{"action", ev("action", `"name": "utter_greet", "policy": "policy_1_TEDPolicy", "confidence": 0.98123456`), Options{}, trace("utter_greet", "policy_1_TEDPolicy, confidence 0.9812", false), ""},
		{"action no policy", ev("action", `"name": "action_session_start", "policy": null, "confidence": 1.0`), Options{}, trace("action_session_start", "confidence 1", false), ""},
		{"action nothing", ev("action", `"name": "action_x", "policy": null, "confidence": null`), Options{}, trace("action_x", "", false), ""},
		{"action end-to-end", ev("action", `"name": null, "action_text": "Hi there", "policy": "policy_1_TEDPolicy", "confidence": 0.5`), Options{}, trace("action_text: Hi there", "policy_1_TEDPolicy, confidence 0.5", false), ""},
		{"action listen", ev("action", `"name": "action_listen", "policy": "policy_0_MemoizationPolicy", "confidence": 1.0`), Options{}, nil, ReasonActionListen},
		{"action default fallback", ev("action", `"name": "action_default_fallback", "policy": "policy_2_RulePolicy", "confidence": 1.0`), Options{}, nil, ReasonFallbackAction},
		{"action two stage fallback", ev("action", `"name": "action_two_stage_fallback"`), Options{}, nil, ReasonFallbackAction},
		{"action custom fallback list", ev("action", `"name": "action_default_fallback"`), Options{FallbackActions: []string{}}, trace("action_default_fallback", "", false), ""},
		{"action without name", ev("action", `"name": null`), Options{}, nil, ReasonActionNoName},
		{"action rejected", ev("action_execution_rejected", `"name": "restaurant_form", "policy": "policy_2_RulePolicy", "confidence": 1.0`), Options{},
			trace("restaurant_form", "rejected; policy_2_RulePolicy, confidence 1", true), ""},

		// slot
		{"slot string", ev("slot", `"name": "mood", "value": "unhappy"`), Options{}, vars("mood", "unhappy"), ""},
		{"slot bool", ev("slot", `"name": "feeling_better", "value": true`), Options{}, vars("feeling_better", "true"), ""},
		{"slot number", ev("slot", `"name": "amount", "value": 50.0`), Options{}, vars("amount", "50.0"), ""},
		{"slot null", ev("slot", `"name": "amount", "value": null`), Options{}, vars("amount", ""), ""},
		{"slot absent value", ev("slot", `"name": "amount"`), Options{}, vars("amount", ""), ""},
		{"slot list", ev("slot", `"name": "toppings", "value": ["ham", "a<b"]`), Options{}, vars("toppings", `["ham","a<b"]`), ""},
		{"slot object", ev("slot", `"name": "addr", "value": {"zip": "10115", "city": "Berlin"}`), Options{}, vars("addr", `{"city":"Berlin","zip":"10115"}`), ""},
		{"slot requested_slot", ev("slot", `"name": "requested_slot", "value": "cuisine"`), Options{}, nil, ReasonInternalSlot},
		{"slot session_started_metadata", ev("slot", `"name": "session_started_metadata", "value": {"a": 1}`), Options{}, nil, ReasonInternalSlot},
		{"slot flow_hashes", ev("slot", `"name": "flow_hashes", "value": {}`), Options{}, nil, ReasonInternalSlot},
		{"slot without name", ev("slot", `"value": 1`), Options{}, nil, ReasonSlotNoName},

		// forms (active_loop)
		{"active loop", ev("active_loop", `"name": "restaurant_form"`), Options{},
			&eventv1.Envelope{Payload: &eventv1.Envelope_FlowStarted{FlowStarted: &eventv1.FlowStarted{FlowId: "restaurant_form"}}}, ""},
		{"active loop end", ev("active_loop", `"name": null`), Options{},
			&eventv1.Envelope{Payload: &eventv1.Envelope_FlowCompleted{FlowCompleted: &eventv1.FlowCompleted{}}}, ""},
		{"legacy form", ev("form", `"name": "restaurant_form"`), Options{},
			&eventv1.Envelope{Payload: &eventv1.Envelope_FlowStarted{FlowStarted: &eventv1.FlowStarted{FlowId: "restaurant_form"}}}, ""},

		// CALM flows
		{"flow started", ev("flow_started", `"flow_id": "transfer_money"`), Options{},
			&eventv1.Envelope{Payload: &eventv1.Envelope_FlowStarted{FlowStarted: &eventv1.FlowStarted{FlowId: "transfer_money"}}}, ""},
		{"flow completed", ev("flow_completed", `"flow_id": "transfer_money", "step_id": "2_utter_done"`), Options{},
			&eventv1.Envelope{Payload: &eventv1.Envelope_FlowCompleted{FlowCompleted: &eventv1.FlowCompleted{FlowId: "transfer_money"}}}, ""},
		{"flow cancelled", ev("flow_cancelled", `"flow_id": "transfer_money", "step_id": "1_collect_amount"`), Options{},
			&eventv1.Envelope{Payload: &eventv1.Envelope_FlowDropped{FlowDropped: &eventv1.FlowDropped{FlowId: "transfer_money", StepId: "1_collect_amount"}}}, ""},
		{"flow interrupted", ev("flow_interrupted", `"flow_id": "transfer_money", "step_id": "1_collect_amount"`), Options{},
			&eventv1.Envelope{Payload: &eventv1.Envelope_FlowStep{FlowStep: &eventv1.FlowStep{FlowId: "transfer_money", StepId: "1_collect_amount"}}}, ""},
		{"flow resumed", ev("flow_resumed", `"flow_id": "transfer_money", "step_id": "1_collect_amount"`), Options{},
			&eventv1.Envelope{Payload: &eventv1.Envelope_FlowStep{FlowStep: &eventv1.FlowStep{FlowId: "transfer_money", StepId: "1_collect_amount"}}}, ""},
		{"pattern flow", ev("flow_started", `"flow_id": "pattern_collect_information"`), Options{}, nil, ReasonPatternFlow},
		{"pattern flow completed", ev("flow_completed", `"flow_id": "pattern_completed", "step_id": "x"`), Options{}, nil, ReasonPatternFlow},
		{"internal error pattern", ev("flow_started", `"flow_id": "pattern_internal_error"`), Options{},
			trace("pattern_internal_error", "Rasa Pro internal error pattern started", true), ""},

		// pause, resume, restart
		{"pause", ev("pause", ""), Options{},
			&eventv1.Envelope{Payload: &eventv1.Envelope_HandoffRequested{HandoffRequested: &eventv1.HandoffRequested{Reason: "rasa pause", RequestedBy: eventv1.Actor_ACTOR_BOT}}}, ""},
		{"resume", ev("resume", ""), Options{}, marker("rasa-resume"), ""},
		{"restart", ev("restart", ""), Options{}, marker("rasa-restart"), ""},

		// skipped
		{"rewind", ev("rewind", ""), Options{}, nil, ReasonReverted},
		{"undo", ev("undo", ""), Options{}, nil, ReasonReverted},
		{"reset_slots", ev("reset_slots", ""), Options{}, nil, ReasonResetSlots},
		{"followup", ev("followup", `"name": "action_x"`), Options{}, nil, ReasonScheduling},
		{"reminder", ev("reminder", `"intent": "remind", "date_time": "2026-01-05T10:00:00"`), Options{}, nil, ReasonScheduling},
		{"cancel_reminder", ev("cancel_reminder", `"name": "r1"`), Options{}, nil, ReasonScheduling},
		{"user_featurization", ev("user_featurization", `"use_text_for_featurization": false`), Options{}, nil, ReasonFeaturization},
		{"entities", ev("entities", `"entities": [{"entity": "city", "value": "Berlin"}]`), Options{}, nil, ReasonEntities},
		{"stack", ev("stack", `"update": "[]"`), Options{}, nil, ReasonStack},
		{"agent", ev("agent", `"text": "hi"`), Options{}, nil, ReasonAgent},
		{"loop_interrupted", ev("loop_interrupted", `"is_interrupted": true`), Options{}, nil, ReasonLoopBookkeep},
		{"form_validation", ev("form_validation", `"validate": false`), Options{}, nil, ReasonLoopBookkeep},
		{"export", ev("export", `"path": "stories.yml"`), Options{}, nil, ReasonExport},
		{"unknown", ev("something_new", ""), Options{}, nil, ReasonUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.opts.BotID == "" {
				c.opts.BotID = "moodbot"
			}
			res := mustMap(t, c.opts, c.in)
			if c.want == nil {
				if len(res.Events) != 0 || len(res.Skipped) != 1 {
					t.Fatalf("want one skip, got %d events %v", len(res.Events), res.Skipped)
				}
				if s := res.Skipped[0]; s.Reason != c.skip || s.Index != 0 || !strings.Contains(c.in, `"`+s.Event+`"`) {
					t.Fatalf("skip = %+v, want reason %q", s, c.skip)
				}
				return
			}
			if len(res.Events) != 1 || len(res.Skipped) != 0 {
				t.Fatalf("want one event, got %d events, skipped %v", len(res.Events), res.Skipped)
			}
			got := res.Events[0]
			if got.ConversationId != "s1" || got.ClientEventId == "" || got.EventId != "" || got.TenantId != "" || got.Kind != eventbus.Kind(got) || got.RecordedAt != nil || got.Producer != "" {
				t.Fatalf("envelope fields: %v", got)
			}
			if want := time.Unix(1767612345, 118734000); !got.OccurredAt.AsTime().Equal(want) {
				t.Fatalf("occurred_at = %v, want %v", got.OccurredAt.AsTime(), want)
			}
			want := proto.Clone(c.want).(*eventv1.Envelope)
			want.Kind = ""
			if mp := want.GetMessagePosted(); mp != nil && mp.MessageId == derived {
				mp.MessageId = got.ClientEventId
			}
			if !proto.Equal(payloadOnly(got), want) {
				t.Fatalf("payload\n got %v\nwant %v", payloadOnly(got), want)
			}
		})
	}
}

func TestConversationID(t *testing.T) {
	hashed := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "rasa-" + hex.EncodeToString(sum[:])[:32]
	}
	long := strings.Repeat("a", 129)
	for _, c := range []struct{ sender, want string }{
		{"visitor-8f2c41", "visitor-8f2c41"},
		{"3f6a2c0e9b8d4f71a5e2c3d4b6a7f801", "3f6a2c0e9b8d4f71a5e2c3d4b6a7f801"},
		{strings.Repeat("a", 128), strings.Repeat("a", 128)},
		{long, hashed(long)},
		{"whatsapp:+4915112345678", hashed("whatsapp:+4915112345678")},
		{"jane.doe@example.com", hashed("jane.doe@example.com")},
		{"user 1", hashed("user 1")},
	} {
		got := ConversationID(c.sender)
		if got != c.want || !eventbus.ValidConversationID(got) {
			t.Errorf("ConversationID(%q) = %q, want %q", c.sender, got, c.want)
		}
	}
	res := mustMap(t, Options{}, `{"sender_id": "whatsapp:+4915112345678", "event": "restart", "timestamp": 1767612345}`)
	if got := res.Events[0].ConversationId; got != hashed("whatsapp:+4915112345678") {
		t.Errorf("envelope conversation id %q", got)
	}
}

func TestLiberalInput(t *testing.T) {
	// Numeric sender ids (old Mongo trackers) and string timestamps are accepted.
	res := mustMap(t, Options{}, `{"sender_id": 12345, "event": "restart", "timestamp": "1767612345.5"}`)
	env := res.Events[0]
	if env.ConversationId != "12345" || !env.OccurredAt.AsTime().Equal(time.Unix(1767612345, 5e8)) {
		t.Errorf("got %v", env)
	}
	// A BOM and surrounding whitespace are ignored.
	if _, err := Map(Options{}, []byte("\xef\xbb\xbf\n  "+ev("restart", "")+"\n\n")); err != nil {
		t.Errorf("BOM: %v", err)
	}
	// Concatenated objects without newlines still split.
	res = mustMap(t, Options{}, ev("restart", "")+ev("resume", ""))
	if len(res.Events) != 2 {
		t.Errorf("concatenated: %d events", len(res.Events))
	}
}

func TestTimestampPrecision(t *testing.T) {
	a := mustMap(t, Options{}, `{"sender_id": "s1", "event": "restart", "timestamp": 1767612345.118734}`).Events[0]
	b := mustMap(t, Options{}, `{"sender_id": "s1", "event": "restart", "timestamp": 1767612345.118735}`).Events[0]
	c := mustMap(t, Options{}, `{"sender_id": "s1", "event": "restart", "timestamp": 1767612345.1187340}`).Events[0]
	if a.ClientEventId == b.ClientEventId {
		t.Error("timestamps a microsecond apart share a client event id")
	}
	if a.ClientEventId != c.ClientEventId {
		t.Error("the same float written differently changed the client event id")
	}
	if a.OccurredAt.Nanos != 118734000 {
		t.Errorf("nanos = %d", a.OccurredAt.Nanos)
	}
}

func TestTrackerObject(t *testing.T) {
	tracker := `{"sender_id": "visitor-1", "slots": {}, "latest_message": {}, "events": [
		{"event": "session_started", "timestamp": 1767612345.1},
		{"event": "user", "timestamp": 1767612346.2, "text": "hi", "parse_data": {"intent": {"name": "greet", "confidence": 0.99}}, "message_id": "m1"},
		{"event": "action", "timestamp": 1767612346.3, "name": "action_listen"},
		{"sender_id": "other", "event": "restart", "timestamp": 1767612347}
	]}`
	res := mustMap(t, Options{}, tracker)
	if len(res.Events) != 3 || len(res.Skipped) != 1 || res.Skipped[0].Index != 2 {
		t.Fatalf("got %d events, skipped %v", len(res.Events), res.Skipped)
	}
	for i, want := range []string{"visitor-1", "visitor-1", "other"} {
		if got := res.Events[i].ConversationId; got != want {
			t.Errorf("event %d conversation %q, want %q", i, got, want)
		}
	}
}

func TestErrors(t *testing.T) {
	good := ev("restart", "")
	cases := []struct {
		name  string
		in    string
		index int
		field string
	}{
		{"empty", "", 0, ""},
		{"whitespace", " \n\t", 0, ""},
		{"empty array", "[]", 0, ""},
		{"not json", "hello", 0, ""},
		{"truncated", `{"sender_id": "s1"`, 0, ""},
		{"not an object", `"restart"`, 0, ""},
		{"null", `null`, 0, ""},
		{"array element not an object", "[" + good + ", 42]", 1, ""},
		{"array element null", "[" + good + ", null]", 1, ""},
		{"array broken", "[" + good + ", {]", 1, ""},
		{"array unterminated", "[" + good, 1, ""},
		{"data after array", "[" + good + "] {}", 1, ""},
		{"ndjson broken line", good + "\n" + good + "\n{oops}\n", 2, ""},
		{"missing sender_id", "[" + good + `, {"event": "restart", "timestamp": 1}]`, 1, "sender_id"},
		{"null sender_id", `{"sender_id": null, "event": "restart", "timestamp": 1}`, 0, "sender_id"},
		{"empty sender_id", `{"sender_id": "", "event": "restart", "timestamp": 1}`, 0, "sender_id"},
		{"object sender_id", `{"sender_id": {}, "event": "restart", "timestamp": 1}`, 0, "sender_id"},
		{"bool sender_id", `{"sender_id": true, "event": "restart", "timestamp": 1}`, 0, "sender_id"},
		{"missing event", good + "\n" + `{"sender_id": "s1", "timestamp": 1}`, 1, "event"},
		{"event not a string", `{"sender_id": "s1", "event": ["user"], "timestamp": 1}`, 0, "event"},
		{"missing timestamp", `{"sender_id": "s1", "event": "restart"}`, 0, "timestamp"},
		{"null timestamp", `{"sender_id": "s1", "event": "restart", "timestamp": null}`, 0, "timestamp"},
		{"timestamp not a number", `{"sender_id": "s1", "event": "restart", "timestamp": "yesterday"}`, 0, "timestamp"},
		{"timestamp NaN string", `{"sender_id": "s1", "event": "restart", "timestamp": "NaN"}`, 0, "timestamp"},
		{"timestamp too large", `{"sender_id": "s1", "event": "restart", "timestamp": 1e300}`, 0, "timestamp"},
		{"timestamp overflow", `{"sender_id": "s1", "event": "restart", "timestamp": 1e400}`, 0, "timestamp"},
		{"timestamp bool", `{"sender_id": "s1", "event": "restart", "timestamp": true}`, 0, "timestamp"},
		{"tracker events not an array", `{"sender_id": "s1", "events": {}}`, 0, "events"},
		{"tracker without events", `{"sender_id": "s1", "events": []}`, 0, ""},
		{"tracker event without sender", `{"events": [{"event": "restart", "timestamp": 1}]}`, 0, "sender_id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := Map(Options{}, []byte(c.in))
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("err = %v (%T), want *FieldError", err, err)
			}
			if fe.Index != c.index || fe.Field != c.field || fe.Reason == "" {
				t.Fatalf("got %+v, want index %d field %q", fe, c.index, c.field)
			}
			if len(res.Events) != 0 || len(res.Skipped) != 0 {
				t.Fatalf("partial result on error: %+v", res)
			}
			wantPrefix := fmt.Sprintf("rasa: events[%d]", c.index)
			if c.field != "" {
				wantPrefix += "." + c.field + ": "
			}
			if !strings.HasPrefix(err.Error(), wantPrefix) {
				t.Fatalf("message %q, want prefix %q", err, wantPrefix)
			}
		})
	}
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func lines(b []byte) [][]byte {
	var out [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(l)) > 0 {
			out = append(out, l)
		}
	}
	return out
}

// describe renders an envelope's payload compactly for golden comparisons.
func describe(env *eventv1.Envelope) string {
	switch p := env.Payload.(type) {
	case *eventv1.Envelope_ConversationStarted:
		return fmt.Sprintf("conversation_started %s %s", p.ConversationStarted.BotId, p.ConversationStarted.Channel)
	case *eventv1.Envelope_MessagePosted:
		m := p.MessagePosted
		s := fmt.Sprintf("message_posted %s %q", m.Role, m.Text)
		if m.Intent != nil {
			s += fmt.Sprintf(" intent=%s/%g", m.Intent.Name, m.Intent.Confidence)
		}
		if m.Unidentified {
			s += " unidentified"
		}
		return s
	case *eventv1.Envelope_DebugTrace:
		st := p.DebugTrace.Steps[0]
		return fmt.Sprintf("debug_trace %s (%s) error=%v", st.Name, st.Detail, st.Error)
	case *eventv1.Envelope_VariablesCaptured:
		return fmt.Sprintf("variables_captured %v", p.VariablesCaptured.Variables)
	case *eventv1.Envelope_MarkerAdded:
		return "marker_added " + p.MarkerAdded.Marker
	case *eventv1.Envelope_FlowStarted:
		return "flow_started " + p.FlowStarted.FlowId
	case *eventv1.Envelope_FlowCompleted:
		return "flow_completed " + p.FlowCompleted.FlowId
	case *eventv1.Envelope_FlowStep:
		return "flow_step " + p.FlowStep.FlowId + " " + p.FlowStep.StepId
	case *eventv1.Envelope_FlowDropped:
		return "flow_dropped " + p.FlowDropped.FlowId + " " + p.FlowDropped.StepId
	}
	return eventbus.Kind(env)
}

func TestMoodbotFixture(t *testing.T) {
	raw := readFixture(t, "moodbot_tracker.jsonl")
	res := mustMap(t, Options{BotID: "moodbot", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET}, string(raw))
	want := []string{
		"debug_trace action_session_start (confidence 1) error=false",
		"conversation_started moodbot CHANNEL_WEB_WIDGET",
		`message_posted ROLE_VISITOR "hi" intent=greet/0.9987`,
		"debug_trace utter_greet (policy_0_MemoizationPolicy, confidence 1) error=false",
		`message_posted ROLE_BOT "Hey! How are you?"`,
		`message_posted ROLE_VISITOR "not great, feeling pretty sad" intent=mood_unhappy/0.9931`,
		"variables_captured map[mood:unhappy]",
		"debug_trace utter_cheer_up (policy_0_MemoizationPolicy, confidence 1) error=false",
		`message_posted ROLE_BOT "Here is something to cheer you up:"`,
		"debug_trace utter_did_that_help (policy_0_MemoizationPolicy, confidence 1) error=false",
		`message_posted ROLE_BOT "Did that help you?"`,
		`message_posted ROLE_VISITOR "no" intent=deny/0.9978`,
		"debug_trace utter_cheer_up (policy_1_TEDPolicy, confidence 0.8812) error=false",
		`message_posted ROLE_BOT "Here is something to cheer you up:"`,
		"debug_trace utter_did_that_help (policy_1_TEDPolicy, confidence 0.9524) error=false",
		`message_posted ROLE_BOT "Did that help you?"`,
		`message_posted ROLE_VISITOR "yes, thanks" intent=affirm/0.9969`,
		"variables_captured map[feeling_better:true]",
		"debug_trace utter_happy (policy_1_TEDPolicy, confidence 0.9712) error=false",
		`message_posted ROLE_BOT "Great, carry on!"`,
		`message_posted ROLE_VISITOR "blorf zzk qwop" intent=nlu_fallback/0.3 unidentified`,
		`message_posted ROLE_BOT "Sorry, I didn't get that. Can you rephrase?" unidentified`,
		`message_posted ROLE_VISITOR "/restart" intent=restart/1`,
		"debug_trace action_restart (policy_2_RulePolicy, confidence 1) error=false",
		"marker_added rasa-restart",
		"debug_trace action_session_start (confidence 1) error=false",
		"conversation_started moodbot CHANNEL_WEB_WIDGET",
	}
	var got []string
	for _, env := range res.Events {
		got = append(got, describe(env))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("mapped events:\n%s\n\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	skipped := map[string]int{}
	for _, s := range res.Skipped {
		skipped[s.Event+": "+s.Reason]++
	}
	wantSkipped := map[string]int{
		"action: " + ReasonActionListen:              7,
		"action: " + ReasonFallbackAction:            1,
		"user_featurization: " + ReasonFeaturization: 6,
		"rewind: " + ReasonReverted:                  1,
	}
	if fmt.Sprint(skipped) != fmt.Sprint(wantSkipped) {
		t.Errorf("skipped %v, want %v", skipped, wantSkipped)
	}
	if n := len(lines(raw)); len(res.Events)+len(res.Skipped) != n {
		t.Errorf("%d events + %d skipped != %d input events", len(res.Events), len(res.Skipped), n)
	}
	checkEnvelopes(t, res.Events)
	// The visitor's message ids are Rasa's; the bot's are derived.
	if id := res.Events[2].GetMessagePosted().MessageId; id != "3f6a2c0e9b8d4f71a5e2c3d4b6a7f801" {
		t.Errorf("visitor message id %q", id)
	}
	if bot := res.Events[4]; bot.GetMessagePosted().MessageId != bot.ClientEventId {
		t.Errorf("bot message id %q", bot.GetMessagePosted().MessageId)
	}
}

func TestCALMFixture(t *testing.T) {
	raw := readFixture(t, "calm_transfer_money.jsonl")
	res := mustMap(t, Options{BotID: "moodbot"}, string(raw))
	var got []string
	for _, env := range res.Events {
		if env.GetDebugTrace() != nil {
			continue
		}
		got = append(got, describe(env))
	}
	want := []string{
		"conversation_started moodbot CHANNEL_API",
		`message_posted ROLE_VISITOR "I want to send money to Joe"`,
		"flow_started transfer_money",
		"variables_captured map[recipient:Joe]",
		`message_posted ROLE_BOT "How much money would you like to send?"`,
		`message_posted ROLE_VISITOR "wait, what's my balance first?"`,
		"flow_step transfer_money 1_collect_amount",
		"flow_started check_balance",
		"variables_captured map[current_balance:1250.5]",
		`message_posted ROLE_BOT "You still have 1250.5 EUR in your account."`,
		"flow_completed check_balance",
		`message_posted ROLE_BOT "Let's continue with Transfer money."`,
		"flow_step transfer_money 1_collect_amount",
		`message_posted ROLE_BOT "How much money would you like to send?"`,
		`message_posted ROLE_VISITOR "50"`,
		"variables_captured map[amount:50.0]",
		`message_posted ROLE_BOT "All done. 50.0 has been sent to Joe."`,
		"flow_completed transfer_money",
		`message_posted ROLE_BOT "What else can I help you with?"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("mapped events:\n%s\n\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantConv := ConversationID("whatsapp:+4915112345678")
	for _, env := range res.Events {
		if env.ConversationId != wantConv {
			t.Fatalf("conversation id %q, want %q", env.ConversationId, wantConv)
		}
	}
	patterns := 0
	for _, s := range res.Skipped {
		if s.Reason == ReasonPatternFlow {
			patterns++
		}
	}
	if patterns != 6 {
		t.Errorf("%d pattern flow events skipped, want 6", patterns)
	}
	checkEnvelopes(t, res.Events)
}

// checkEnvelopes asserts what every mapped envelope must satisfy, and that
// client event ids are unique (a collision would drop an event as a duplicate).
func checkEnvelopes(t testing.TB, envs []*eventv1.Envelope) {
	t.Helper()
	seen := map[string]bool{}
	for i, env := range envs {
		if !eventbus.ValidConversationID(env.ConversationId) {
			t.Errorf("event %d: invalid conversation id %q", i, env.ConversationId)
		}
		if env.Payload == nil || eventbus.Kind(env) == "" {
			t.Errorf("event %d: no payload", i)
		}
		if env.ClientEventId == "" || len(env.ClientEventId) > 128 {
			t.Errorf("event %d: client event id %q", i, env.ClientEventId)
		}
		if seen[env.ClientEventId] {
			t.Errorf("event %d: duplicate client event id %q", i, env.ClientEventId)
		}
		seen[env.ClientEventId] = true
		if env.OccurredAt == nil || env.OccurredAt.CheckValid() != nil {
			t.Errorf("event %d: occurred_at %v", i, env.OccurredAt)
		}
		if _, err := proto.Marshal(env); err != nil {
			t.Errorf("event %d: marshal: %v", i, err)
		}
	}
}

func TestDeterministic(t *testing.T) {
	for _, name := range []string{"moodbot_tracker.jsonl", "calm_transfer_money.jsonl"} {
		raw := readFixture(t, name)
		a := mustMap(t, Options{BotID: "b"}, string(raw))
		b := mustMap(t, Options{BotID: "b"}, string(raw))
		if len(a.Events) != len(b.Events) {
			t.Fatalf("%s: %d vs %d events", name, len(a.Events), len(b.Events))
		}
		for i := range a.Events {
			if a.Events[i].ClientEventId != b.Events[i].ClientEventId || !proto.Equal(a.Events[i], b.Events[i]) {
				t.Fatalf("%s: event %d differs between runs", name, i)
			}
		}
	}
}

// TestBatchEqualsSingle maps a fixture as one JSON array, as NDJSON, and one
// broker message at a time: the envelopes and skips must be the same.
func TestBatchEqualsSingle(t *testing.T) {
	for _, name := range []string{"moodbot_tracker.jsonl", "calm_transfer_money.jsonl"} {
		raw := readFixture(t, name)
		ls := lines(raw)
		opts := Options{BotID: "b"}
		var single Result
		for i, l := range ls {
			r := mustMap(t, opts, string(l))
			single.Events = append(single.Events, r.Events...)
			for _, s := range r.Skipped {
				s.Index = i
				single.Skipped = append(single.Skipped, s)
			}
		}
		array := mustMap(t, opts, "[\n"+string(bytes.Join(ls, []byte(",\n")))+"\n]")
		ndjson := mustMap(t, opts, string(raw))
		for _, batch := range []Result{array, ndjson} {
			if len(batch.Events) != len(single.Events) {
				t.Fatalf("%s: %d events in batch, %d one by one", name, len(batch.Events), len(single.Events))
			}
			for i := range batch.Events {
				if !proto.Equal(batch.Events[i], single.Events[i]) {
					t.Fatalf("%s: event %d differs:\n%v\n%v", name, i, batch.Events[i], single.Events[i])
				}
			}
			if fmt.Sprint(batch.Skipped) != fmt.Sprint(single.Skipped) {
				t.Fatalf("%s: skipped differ:\n%v\n%v", name, batch.Skipped, single.Skipped)
			}
		}
	}
}

func TestRedeliveryWithOtherFormatting(t *testing.T) {
	// A redelivered message re-serialized with other key order and spacing
	// keeps its client event id.
	a := mustMap(t, Options{}, `{"sender_id": "s1", "event": "slot", "timestamp": 1767612345.25, "name": "addr", "value": {"zip": "10115", "city": "Berlin"}}`)
	b := mustMap(t, Options{}, `{"value":{"city":"Berlin","zip":"10115"},"name":"addr","timestamp":1767612345.250,"event":"slot","sender_id":"s1"}`)
	if a.Events[0].ClientEventId != b.Events[0].ClientEventId {
		t.Error("client event id depends on formatting")
	}
	// Different values at the same instant get different ids.
	c := mustMap(t, Options{}, `{"sender_id": "s1", "event": "slot", "timestamp": 1767612345.25, "name": "addr", "value": "elsewhere"}`)
	if a.Events[0].ClientEventId == c.Events[0].ClientEventId {
		t.Error("different slot values share a client event id")
	}
}

func TestOccurredAt(t *testing.T) {
	for _, c := range []struct {
		in   string
		want *timestamppb.Timestamp
	}{
		{"1767612345", &timestamppb.Timestamp{Seconds: 1767612345}},
		{"1767612345.5", &timestamppb.Timestamp{Seconds: 1767612345, Nanos: 5e8}},
		{"-0.5", &timestamppb.Timestamp{Seconds: -1, Nanos: 5e8}},
		{"0", &timestamppb.Timestamp{}},
		{"1.1234567896", &timestamppb.Timestamp{Seconds: 1, Nanos: 123456790}},
		{"1.9999999996", &timestamppb.Timestamp{Seconds: 2}},
		{"1e9", &timestamppb.Timestamp{Seconds: 1e9}},
	} {
		res := mustMap(t, Options{}, `{"sender_id": "s1", "event": "restart", "timestamp": `+c.in+`}`)
		if got := res.Events[0].OccurredAt; !proto.Equal(got, c.want) {
			t.Errorf("timestamp %s: got %v, want %v", c.in, got, c.want)
		}
	}
}
