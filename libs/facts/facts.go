// Package facts folds a conversation's events into the state that tagging
// rules and the built-in issue detectors look at (taggingv1.RuleConversation),
// and describes the event being folded (taggingv1.RuleEvent). It is pure: no
// I/O, no clock. The live consumer and the backfill fold with the same
// function, so they see exactly the same states.
package facts

import (
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
)

// Producer is the producer name of the events tagging writes itself.
const Producer = "tagging"

// Bounds on what one conversation's state holds, so that a runaway
// conversation cannot grow it without limit. Counts stay exact.
const (
	// DefaultMaxMessages is how many recent messages are kept unless
	// configured otherwise.
	DefaultMaxMessages = 50
	// MaxTextBytes is the longest message text kept in the state; longer
	// texts are cut at a character boundary. `event.text` always has the
	// whole text.
	MaxTextBytes = 4096
	// MaxListItems bounds intents, flows, goals and variables.
	MaxListItems = 100
	// MaxFieldBytes bounds every other string of the state and the event
	// (ids, names, intents, variable keys and values); longer ones are cut
	// at a character boundary. With the bounds above it lets the rules'
	// worst-case cost estimate hold for any input.
	MaxFieldBytes = 1024
)

// Options tune the fold.
type Options struct {
	// MaxMessages is how many of the most recent messages are kept
	// (DefaultMaxMessages when 0).
	MaxMessages int
}

func (o Options) maxMessages() int {
	if o.MaxMessages <= 0 {
		return DefaultMaxMessages
	}
	return o.MaxMessages
}

// OwnKind reports the kinds tagging writes itself. They are not folded and
// do not trigger rules, so that a rule can never react to its own output and
// live tagging and backfill evaluate on the same events.
func OwnKind(kind string) bool {
	switch kind {
	case "tag_applied", "tag_removed", "label_added", "label_removed", "flagged", "unflagged", "issue_detected":
		return true
	}
	return false
}

// Apply folds env into c and returns the event as rules see it and the
// fields it may have changed. Rules and detectors run after an event only
// when changed is not empty: not after tagging's own events, nor after a
// message already in the kept window (the same message_id, or event id when
// it has none: a client retry stored twice). The caller applies each stream
// message once, in stream order.
func Apply(c *taggingv1.RuleConversation, env *eventv1.Envelope, o Options) (ev *taggingv1.RuleEvent, changed Fields) {
	ev = &taggingv1.RuleEvent{Kind: kindOf(env), EventId: clip(env.GetEventId())}
	if OwnKind(ev.Kind) {
		return ev, 0
	}
	if m := env.GetMessagePosted(); m != nil {
		id := clip(messageID(m, env))
		if slices.ContainsFunc(c.Messages, func(k *taggingv1.RuleMessage) bool { return k.MessageId == id }) {
			return ev, 0
		}
	}
	c.Events++
	switch p := env.Payload.(type) {
	case *eventv1.Envelope_ConversationStarted:
		started(c, p.ConversationStarted)
	case *eventv1.Envelope_MessagePosted:
		m := p.MessagePosted
		ev.Role = EnumName(m.GetRole().String(), "ROLE_")
		ev.Text = m.GetText()
		ev.Intent = clip(m.GetIntent().GetName())
		ev.Unidentified = m.GetUnidentified()
		ev.ResponseMs = int64(m.GetResponseTimeMs())
		ev.MessageId = clip(messageID(m, env))
		ev.FlowId, ev.NodeId = clip(m.GetFlowId()), clip(m.GetNodeId())
		if !c.Ended {
			message(c, ev, o)
		}
	case *eventv1.Envelope_VariablesCaptured:
		for k, v := range p.VariablesCaptured.GetVariables() {
			setVariable(c, k, v, true)
		}
	case *eventv1.Envelope_FlowStarted:
		ev.FlowId = clip(p.FlowStarted.GetFlowId())
		c.FlowsStarted = addBounded(c.FlowsStarted, ev.FlowId)
	case *eventv1.Envelope_FlowStep:
		f := p.FlowStep
		ev.FlowId, ev.StepId, ev.NodeId = clip(f.GetFlowId()), clip(f.GetStepId()), clip(f.GetNodeId())
	case *eventv1.Envelope_FlowCompleted:
		ev.FlowId = clip(p.FlowCompleted.GetFlowId())
		if ev.FlowId == "" && len(c.FlowsStarted) > 0 {
			ev.FlowId = c.FlowsStarted[len(c.FlowsStarted)-1]
		}
		c.FlowsCompleted = addBounded(c.FlowsCompleted, ev.FlowId)
	case *eventv1.Envelope_FlowDropped:
		f := p.FlowDropped
		ev.FlowId, ev.StepId, ev.NodeId, ev.Failed = clip(f.GetFlowId()), clip(f.GetStepId()), clip(f.GetNodeId()), f.GetFailed()
		if len(c.FlowsDropped) < MaxListItems {
			c.FlowsDropped = append(c.FlowsDropped, &taggingv1.RuleFlowDrop{FlowId: ev.FlowId, StepId: ev.StepId, NodeId: ev.NodeId, Failed: ev.Failed})
		}
	case *eventv1.Envelope_GoalReached:
		id := p.GoalReached.GetGoalId()
		if id == "" {
			id = p.GoalReached.GetName()
		}
		c.Goals = addBounded(c.Goals, clip(id))
	case *eventv1.Envelope_LeadCaptured:
		c.LeadsCaptured++
	case *eventv1.Envelope_UsageRecorded:
		u := p.UsageRecorded
		c.CostMicros += u.GetCostMicros()
		c.InputTokens += int64(u.GetInputTokens())
		c.OutputTokens += int64(u.GetOutputTokens())
	case *eventv1.Envelope_HandoffRequested:
		c.HandoffRequested = true
	case *eventv1.Envelope_AgentJoined:
		c.AgentJoined = true
	case *eventv1.Envelope_OperatorNoResponse:
		c.OperatorNoResponse = true
	case *eventv1.Envelope_ConversationEnded:
		if !c.Ended {
			c.Ended = true
			c.EndReason = EnumName(p.ConversationEnded.GetReason().String(), "END_REASON_")
		}
	case *eventv1.Envelope_EngagementClassified:
		c.Engagement = EnumName(p.EngagementClassified.GetEngagement().String(), "ENGAGEMENT_")
	case *eventv1.Envelope_DebugTrace:
		ev.MessageId = clip(p.DebugTrace.GetMessageId())
		for _, s := range p.DebugTrace.GetSteps() {
			if s.GetError() {
				ev.Failed = true
				break
			}
		}
	case *eventv1.Envelope_LocationResolved:
		if cc := p.LocationResolved.GetLocation().GetCountry(); cc != "" {
			c.Country = clip(cc)
		}
	}
	return ev, changedBy(ev.Kind)
}

func started(c *taggingv1.RuleConversation, cs *eventv1.ConversationStarted) {
	if v := cs.GetBotId(); v != "" {
		c.BotId = clip(v)
	}
	if cs.GetChannel() != eventv1.Channel_CHANNEL_UNSPECIFIED {
		c.Channel = EnumName(cs.GetChannel().String(), "CHANNEL_")
	}
	if cs.GetPlatform() != eventv1.Platform_PLATFORM_UNSPECIFIED {
		c.Platform = EnumName(cs.GetPlatform().String(), "PLATFORM_")
	}
	if cs.GetType() != eventv1.ConversationType_CONVERSATION_TYPE_UNSPECIFIED {
		c.Type = EnumName(cs.GetType().String(), "CONVERSATION_TYPE_")
	}
	if v := cs.GetVisitor().GetLocale(); v != "" {
		c.Locale = clip(v)
	}
	if v := cs.GetLocation().GetCountry(); v != "" {
		c.Country = clip(v)
	}
	// Variables captured later win over the start's initial values.
	for _, k := range sortedKeys(cs.GetVariables()) {
		setVariable(c, k, cs.GetVariables()[k], false)
	}
}

func message(c *taggingv1.RuleConversation, ev *taggingv1.RuleEvent, o Options) {
	switch ev.Role {
	case "visitor":
		c.VisitorMessages++
		c.VisitorReplied = true
	case "bot":
		c.BotMessages++
	case "agent":
		c.AgentMessages++
	}
	if ev.Unidentified {
		c.UnidentifiedCount++
	}
	if ev.ResponseMs > c.MaxResponseMs {
		c.MaxResponseMs = ev.ResponseMs
	}
	if ev.Intent != "" {
		c.Intents = addBounded(c.Intents, ev.Intent)
	}
	c.Messages = append(c.Messages, &taggingv1.RuleMessage{
		Role: ev.Role, Text: truncate(ev.Text, MaxTextBytes), Intent: ev.Intent, Unidentified: ev.Unidentified,
		ResponseMs: ev.ResponseMs, MessageId: ev.MessageId, FlowId: ev.FlowId, NodeId: ev.NodeId,
	})
	if n := o.maxMessages(); len(c.Messages) > n {
		c.Messages = slices.Delete(c.Messages, 0, len(c.Messages)-n)
	}
}

func setVariable(c *taggingv1.RuleConversation, k, v string, overwrite bool) {
	k, v = clip(k), clip(v)
	if c.Variables == nil {
		c.Variables = map[string]string{}
	}
	if _, ok := c.Variables[k]; ok {
		if overwrite {
			c.Variables[k] = v
		}
		return
	}
	if len(c.Variables) < MaxListItems {
		c.Variables[k] = v
	}
}

// messageID is the message's client id, else the event id.
func messageID(m *eventv1.MessagePosted, env *eventv1.Envelope) string {
	if id := m.GetMessageId(); id != "" {
		return id
	}
	return env.GetEventId()
}

// EnumName turns "CHANNEL_WEB_WIDGET" into "web_widget" given the prefix;
// the unspecified value becomes "".
func EnumName(full, prefix string) string {
	n := strings.ToLower(strings.TrimPrefix(full, prefix))
	if n == "unspecified" {
		return ""
	}
	return n
}

func kindOf(env *eventv1.Envelope) string { return eventbus.Kind(env) }

func addBounded(list []string, v string) []string {
	if v == "" || len(list) >= MaxListItems || slices.Contains(list, v) {
		return list
	}
	return append(list, v)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// clip bounds a string field of the state or the event to MaxFieldBytes.
func clip(s string) string { return truncate(s, MaxFieldBytes) }

// truncate cuts s to at most n bytes at a character boundary. A cut string
// is a copy, so that the state does not keep the whole text alive.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strings.Clone(s[:n])
}
