package rasa

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// Reasons reported in Skip.Reason.
const (
	ReasonActionListen   = "action_listen only marks that the assistant waits for the visitor"
	ReasonFallbackAction = "fallback action: its bot message is stored and marked unidentified"
	ReasonActionNoName   = "action without name or action_text"
	ReasonEmptyUser      = "user event without text or intent"
	ReasonExternalUser   = "external event (intent triggered via API or reminder), not typed by the visitor"
	ReasonEmptyBot       = "bot event without text or rich content"
	ReasonSlotNoName     = "slot event without name"
	ReasonInternalSlot   = "internal Rasa slot"
	ReasonPatternFlow    = "Rasa Pro conversation-repair pattern (system flow)"
	ReasonReverted       = "Rasa-internal replay of the tracker; the transcript keeps what was said"
	ReasonResetSlots     = "slot reset; Parley variables keep their last captured values"
	ReasonScheduling     = "scheduling hint; its effects arrive as later events"
	ReasonFeaturization  = "featurization hint for Rasa's policies"
	ReasonEntities       = "entities reach Parley through slot events"
	ReasonStack          = "Rasa Pro dialogue-stack bookkeeping; flows are mapped from flow_* events"
	ReasonAgent          = "legacy agent utterance; not produced by Rasa's channels"
	ReasonLoopBookkeep   = "form bookkeeping"
	ReasonExport         = "story export request"
	ReasonUnknown        = "unknown event type"
)

type mapper struct {
	opts         Options
	unidentified []string
	fallbacks    []string
}

func newMapper(opts Options) *mapper {
	m := &mapper{opts: opts, unidentified: opts.UnidentifiedIntents, fallbacks: opts.FallbackActions}
	if m.unidentified == nil {
		m.unidentified = DefaultUnidentifiedIntents()
	}
	if m.fallbacks == nil {
		m.fallbacks = DefaultFallbackActions()
	}
	return m
}

// mapEvent returns the envelope (payload only) for an event, or nil and the
// reason it is skipped.
func (m *mapper) mapEvent(e *event) (*eventv1.Envelope, string) {
	switch e.typ {
	case "session_started":
		return m.sessionStarted(e), ""
	case "user":
		return m.user(e)
	case "bot":
		return m.bot(e)
	case "action":
		return m.action(e)
	case "action_execution_rejected":
		return m.rejected(e), ""
	case "slot":
		return m.slot(e)
	case "active_loop", "form": // "form" is the pre-2.0 name of active_loop
		return m.activeLoop(e), ""
	case "flow_started", "flow_completed", "flow_cancelled", "flow_interrupted", "flow_resumed":
		return m.flow(e)
	case "pause":
		return eventbus.NewEnvelope("", "", &eventv1.HandoffRequested{
			Reason: "rasa pause", RequestedBy: eventv1.Actor_ACTOR_BOT}), ""
	case "resume":
		return marker("rasa-resume"), ""
	case "restart":
		return marker("rasa-restart"), ""
	case "rewind", "undo":
		return nil, ReasonReverted
	case "reset_slots":
		return nil, ReasonResetSlots
	case "followup", "reminder", "cancel_reminder":
		return nil, ReasonScheduling
	case "user_featurization":
		return nil, ReasonFeaturization
	case "entities":
		return nil, ReasonEntities
	case "stack":
		return nil, ReasonStack
	case "agent":
		return nil, ReasonAgent
	case "loop_interrupted", "form_validation":
		return nil, ReasonLoopBookkeep
	case "export":
		return nil, ReasonExport
	}
	return nil, ReasonUnknown
}

func marker(name string) *eventv1.Envelope {
	return eventbus.NewEnvelope("", "", &eventv1.MarkerAdded{Marker: name})
}

func (m *mapper) sessionStarted(e *event) *eventv1.Envelope {
	cs := &eventv1.ConversationStarted{
		BotId:   m.opts.BotID,
		Channel: m.opts.Channel,
		Type:    eventv1.ConversationType_CONVERSATION_TYPE_LIVE,
	}
	if cs.Channel == eventv1.Channel_CHANNEL_UNSPECIFIED {
		cs.Channel = ChannelOf(e.str("input_channel"))
	}
	for k, v := range object(e.fields["metadata"]) {
		if s, ok := scalar(v); ok {
			if cs.Variables == nil {
				cs.Variables = map[string]string{}
			}
			cs.Variables[k] = s
		}
	}
	return eventbus.NewEnvelope("", "", cs)
}

// ChannelOf maps a Rasa input_channel name onto a Parley channel:
// rest and socketio are the web widget, facebook, telegram, twilio (SMS) and
// whatsapp are themselves, cmdline (rasa shell) is the test chat, Rasa Pro's
// voice channels are voice, and anything else (including "") is the API.
func ChannelOf(inputChannel string) eventv1.Channel {
	switch strings.ToLower(strings.TrimSpace(inputChannel)) {
	case "rest", "socketio":
		return eventv1.Channel_CHANNEL_WEB_WIDGET
	case "facebook":
		return eventv1.Channel_CHANNEL_FACEBOOK
	case "telegram":
		return eventv1.Channel_CHANNEL_TELEGRAM
	case "twilio":
		return eventv1.Channel_CHANNEL_SMS
	case "whatsapp":
		return eventv1.Channel_CHANNEL_WHATSAPP
	case "cmdline":
		return eventv1.Channel_CHANNEL_TEST_CHAT
	case "twilio_voice", "audiocodes", "jambonz", "genesys":
		return eventv1.Channel_CHANNEL_VOICE
	}
	return eventv1.Channel_CHANNEL_API
}

func (m *mapper) user(e *event) (*eventv1.Envelope, string) {
	parse := object(e.fields["parse_data"])
	text := e.str("text")
	if text == "" {
		text, _ = scalar(parse["text"])
	}
	if isExternal(e, text) {
		return nil, ReasonExternalUser
	}
	intent := object(parse["intent"])
	if intent == nil {
		intent = object(e.fields["intent"])
	}
	intentName, _ := scalar(intent["name"])
	if text == "" && intentName == "" {
		return nil, ReasonEmptyUser
	}
	msgID := e.str("message_id")
	if msgID == "" {
		msgID, _ = scalar(parse["message_id"])
	}
	if msgID == "" {
		msgID = e.clientID
	}
	mp := &eventv1.MessagePosted{
		MessageId:    msgID,
		Role:         eventv1.Role_ROLE_VISITOR,
		Text:         text,
		Unidentified: intentName != "" && slices.Contains(m.unidentified, intentName),
	}
	if intentName != "" {
		conf, _ := number(intent["confidence"])
		mp.Intent = &eventv1.Intent{Name: intentName, Confidence: conf}
	}
	return eventbus.NewEnvelope("", "", mp), ""
}

// isExternal reports a user event that Rasa created for an intent triggered
// from outside (POST /conversations/<id>/trigger_intent, reminders).
func isExternal(e *event, text string) bool {
	if v, _ := scalar(object(e.fields["metadata"])["is_external"]); v == "true" {
		return true
	}
	return strings.HasPrefix(text, "EXTERNAL: ")
}

func (m *mapper) bot(e *event) (*eventv1.Envelope, string) {
	text := e.str("text")
	if text == "" {
		text = placeholder(object(e.fields["data"]))
	}
	if text == "" {
		return nil, ReasonEmptyBot
	}
	meta := object(e.fields["metadata"])
	utter, _ := scalar(meta["utter_action"])
	if utter == "" {
		utter, _ = scalar(meta["template_name"]) // Rasa 1.x/2.x
	}
	mp := &eventv1.MessagePosted{
		MessageId:    e.clientID,
		Role:         eventv1.Role_ROLE_BOT,
		Text:         text,
		Unidentified: utter != "" && slices.Contains(m.fallbacks, utter),
	}
	return eventbus.NewEnvelope("", "", mp), ""
}

// placeholder describes a bot message without text, e.g.
// "[image: https://…] [buttons: Yes | No]".
func placeholder(data map[string]json.RawMessage) string {
	var parts []string
	image, imageOK := scalar(data["image"])
	if imageOK {
		parts = append(parts, "[image: "+image+"]")
	} else if !isNull(data["image"]) {
		parts = append(parts, "[image]")
	}
	if !isNull(data["attachment"]) && canonical(data["attachment"]) != canonical(data["image"]) {
		if s, ok := scalar(data["attachment"]); ok {
			parts = append(parts, "[attachment: "+s+"]")
		} else {
			parts = append(parts, "[attachment]")
		}
	}
	for _, k := range [...]string{"buttons", "quick_replies"} {
		if titles := buttonTitles(data[k]); titles != "" {
			parts = append(parts, "["+strings.ReplaceAll(k, "_", " ")+": "+titles+"]")
		}
	}
	if els := array(data["elements"]); len(els) > 0 {
		parts = append(parts, "[carousel: "+strconv.Itoa(len(els))+" elements]")
	}
	if !isNull(data["custom"]) && canonical(data["custom"]) != "{}" {
		parts = append(parts, "[custom payload]")
	}
	return strings.Join(parts, " ")
}

func buttonTitles(raw json.RawMessage) string {
	var titles []string
	for _, b := range array(raw) {
		fields := object(b)
		t, _ := scalar(fields["title"])
		if t == "" {
			t, _ = scalar(fields["payload"])
		}
		if t != "" {
			titles = append(titles, t)
		}
	}
	return strings.Join(titles, " | ")
}

func (m *mapper) action(e *event) (*eventv1.Envelope, string) {
	name := e.str("name")
	if name == "action_listen" {
		return nil, ReasonActionListen
	}
	if name != "" && slices.Contains(m.fallbacks, name) {
		return nil, ReasonFallbackAction
	}
	if name == "" {
		text := e.str("action_text")
		if text == "" {
			return nil, ReasonActionNoName
		}
		name = "action_text: " + text
	}
	return debugTrace(&eventv1.DebugStep{Name: name, Detail: policyDetail(e)}), ""
}

func (m *mapper) rejected(e *event) *eventv1.Envelope {
	detail := "rejected"
	if d := policyDetail(e); d != "" {
		detail += "; " + d
	}
	return debugTrace(&eventv1.DebugStep{Name: e.str("name"), Detail: detail, Error: true})
}

// policyDetail formats the policy that predicted an action and its
// confidence, e.g. "policy_1_TEDPolicy, confidence 0.9812".
func policyDetail(e *event) string {
	var parts []string
	if p := e.str("policy"); p != "" {
		parts = append(parts, p)
	}
	if c, ok := number(e.fields["confidence"]); ok {
		parts = append(parts, "confidence "+strconv.FormatFloat(math.Round(c*1e4)/1e4, 'f', -1, 64))
	}
	return strings.Join(parts, ", ")
}

func debugTrace(step *eventv1.DebugStep) *eventv1.Envelope {
	return eventbus.NewEnvelope("", "", &eventv1.DebugTrace{Steps: []*eventv1.DebugStep{step}})
}

// internalSlot reports Rasa's own bookkeeping slots.
func internalSlot(name string) bool {
	switch name {
	case "requested_slot", "session_started_metadata", "flow_hashes", "dialogue_stack", "return_value":
		return true
	}
	return false
}

func (m *mapper) slot(e *event) (*eventv1.Envelope, string) {
	name := e.str("name")
	if name == "" {
		return nil, ReasonSlotNoName
	}
	if internalSlot(name) {
		return nil, ReasonInternalSlot
	}
	value := ""
	if raw := e.fields["value"]; !isNull(raw) {
		if s, ok := scalar(raw); ok && isString(raw) {
			value = s
		} else {
			value = canonical(raw)
		}
	}
	vc := &eventv1.VariablesCaptured{Variables: map[string]string{name: value}, Source: eventv1.VariableSource_VARIABLE_SOURCE_EXTRACTED}
	return eventbus.NewEnvelope("", "", vc), ""
}

// activeLoop maps a form activation to flow_started and its deactivation
// (name null) to flow_completed with an empty flow_id: Rasa does not repeat
// the form's name, so reporting attributes it to the last started flow.
func (m *mapper) activeLoop(e *event) *eventv1.Envelope {
	if name := e.str("name"); name != "" {
		return eventbus.NewEnvelope("", "", &eventv1.FlowStarted{FlowId: name})
	}
	return eventbus.NewEnvelope("", "", &eventv1.FlowCompleted{})
}

func (m *mapper) flow(e *event) (*eventv1.Envelope, string) {
	flowID, stepID := e.str("flow_id"), e.str("step_id")
	if strings.HasPrefix(flowID, "pattern_") {
		if e.typ == "flow_started" && flowID == "pattern_internal_error" {
			return debugTrace(&eventv1.DebugStep{Name: flowID, Detail: "Rasa Pro internal error pattern started", Error: true}), ""
		}
		return nil, ReasonPatternFlow
	}
	switch e.typ {
	case "flow_started":
		return eventbus.NewEnvelope("", "", &eventv1.FlowStarted{FlowId: flowID}), ""
	case "flow_completed":
		return eventbus.NewEnvelope("", "", &eventv1.FlowCompleted{FlowId: flowID}), ""
	case "flow_cancelled":
		return eventbus.NewEnvelope("", "", &eventv1.FlowDropped{FlowId: flowID, StepId: stepID}), ""
	}
	// flow_interrupted and flow_resumed: the flow pauses for another one and
	// usually continues later, so it is progress, not a drop.
	return eventbus.NewEnvelope("", "", &eventv1.FlowStep{FlowId: flowID, StepId: stepID}), ""
}
