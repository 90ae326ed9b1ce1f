// Package machine is lifecycle's domain: the state of one conversation and
// how each event, sweep or command changes it. It does no I/O and has no
// clock of its own; callers pass the time in.
//
// The rules, in short:
//
//   - The first event of any kind for an unknown conversation opens it
//     (active); conversation_started is optional and fills in its metadata.
//   - Client facts (every kind that is not produced by Parley itself, see
//     [KindClass]) are activity: they move last_activity_at (the client's
//     occurred_at) and last_recorded_at (ingest's recorded_at) forward. A
//     conversation is idle since the later of the two (the store schedules
//     the stale sweep from it), so history imported with old timestamps
//     over several requests is not stale between them.
//   - conversation_closed ends an active conversation; a sweep (stale
//     timeout) or an administrator ends one through [End]. An ended
//     conversation never reopens.
//   - A client fact that the log orders after the end is late: it is counted
//     and answered with late_event_recorded, and changes nothing else.
//   - lifecycle's own events coming back from the log are authoritative:
//     conversation_ended ends a conversation that is still active (rebuild
//     from replay), engagement_classified fixes the classification and
//     operator_no_response marks the handoff as unanswered.
//
// Event ids of derived events are deterministic (see [EndedEventID] and
// friends), so a redelivery or a replay derives the same ids.
package machine

import (
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Producer is the envelope producer of every event lifecycle derives.
const Producer = "lifecycle"

// Status is the coarse state of a conversation.
type Status uint8

// Statuses. The zero value means the conversation is unknown.
const (
	StatusUnknown Status = iota
	StatusActive
	StatusEnded
)

// String returns "active", "ended" or "unknown" (the database spelling).
func (s Status) String() string {
	switch s {
	case StatusActive:
		return "active"
	case StatusEnded:
		return "ended"
	}
	return "unknown"
}

// ParseStatus is the inverse of Status.String.
func ParseStatus(s string) Status {
	switch s {
	case "active":
		return StatusActive
	case "ended":
		return StatusEnded
	}
	return StatusUnknown
}

// State is everything lifecycle knows about one conversation. Times are
// UTC with microsecond precision (what PostgreSQL stores), so a state
// rebuilt from the database computes exactly what one kept in memory does.
type State struct {
	TenantID       string
	ConversationID string
	Status         Status
	Channel        eventv1.Channel
	BotID          string
	Type           eventv1.ConversationType
	StartedAt      time.Time
	LastActivityAt time.Time
	// LastRecordedAt is when ingest recorded the latest client fact (its
	// envelope's recorded_at).
	LastRecordedAt time.Time

	EndedAt   time.Time
	EndReason eventv1.EndReason
	EndedBy   string
	// EndSeq is the stream sequence at which the log ends the conversation:
	// the conversation_closed that ended it, or the conversation_ended once
	// it came back from the log. It is 0 while a conversation ended by a
	// sweep or an administrator waits for its conversation_ended to be read
	// back; client facts in that gap precede the end in the log and are
	// applied, not recorded as late.
	EndSeq uint64

	HandoffRequestedAt time.Time
	// HandoffEventID is the event id of the latest handoff request.
	HandoffEventID string
	// AwaitingAgent: the latest handoff request has neither an agent nor an
	// operator_no_response yet.
	AwaitingAgent      bool
	OperatorNoResponse bool

	// TakeoverAt is when a live agent first joined (zero: never).
	TakeoverAt    time.Time
	AgentID       string
	AgentName     string
	AgentJoinedAt time.Time
	AgentLeftAt   time.Time

	// PendingVisitorAt is the earliest visitor message, once a live agent is
	// involved, that no agent message has answered yet.
	PendingVisitorAt   time.Time
	HasFirstResponse   bool
	FirstResponseMS    uint32
	AgentReplies       uint32
	AgentResponseMSSum uint64

	VisitorMessages uint32
	GoalsReached    uint32
	FlowsCompleted  uint32
	LateEvents      uint32

	Engagement eventv1.Engagement
	Resolved   bool

	// DebugEnabled: a conversation_started asked for debug mode (a later
	// one can turn it on, not off).
	DebugEnabled bool

	// AppliedSeq is the highest stream sequence applied to this
	// conversation; events at or below it are no-ops.
	AppliedSeq uint64
}

// Exists reports whether the conversation is known.
func (s State) Exists() bool { return s.Status != StatusUnknown }

// AvgResponseMS is the mean agent reply time (0 without replies).
func (s State) AvgResponseMS() uint32 {
	if s.AgentReplies == 0 {
		return 0
	}
	return uint32(s.AgentResponseMSSum / uint64(s.AgentReplies))
}

// AgentPresent reports whether an agent joined and has not left since.
func (s State) AgentPresent() bool {
	return s.AgentID != "" && !s.AgentJoinedAt.IsZero() && (s.AgentLeftAt.IsZero() || s.AgentLeftAt.Before(s.AgentJoinedAt))
}

// Event is one event read from the log.
type Event struct {
	Envelope *eventv1.Envelope
	// Seq is the event's stream sequence (0 for an event that is not from
	// the log, e.g. a preview of an API command).
	Seq uint64
	// EndedLater: the log already holds a conversation_ended for this
	// conversation at a higher sequence. A conversation_closed then does not
	// end the conversation: the end comes from that event. This only
	// happens when the state is rebuilt from the log.
	EndedLater bool
}

// Output is what a step asks the adapters to do after the state is stored.
type Output struct {
	// Emit are derived events to append to the log, in order.
	Emit []*eventv1.Envelope
	// Ended is set when this step ended the conversation: the
	// ended-conversations view must learn it.
	Ended bool
	// Late is set when the event was recorded as late.
	Late bool
}

// EndCommand ends a conversation from outside the log: a stale sweep or an
// administrator.
type EndCommand struct {
	Reason eventv1.EndReason
	// At is the time of the end: the sweep's clock or the call's time.
	At      time.Time
	EndedBy string
	// CausationID and CorrelationID go into the derived events' envelopes.
	CausationID   string
	CorrelationID string
}

// KindClass sorts event kinds by how lifecycle treats them.
type KindClass uint8

// Kind classes.
const (
	// ClassActivity: client facts. They are activity and can be late.
	ClassActivity KindClass = iota
	// ClassAnnotation: facts added about a conversation, possibly after it
	// ended (markers, resolved locations). They are neither activity nor late.
	ClassAnnotation
	// ClassLifecycle: lifecycle's own events read back from the log.
	ClassLifecycle
	// ClassService: events other Parley services derive (tagging's tags,
	// labels, flags and issues). They are neither activity nor late: tagging
	// legitimately reacts to a conversation ending.
	ClassService
)

// Classify returns the class of an event kind. Unknown kinds (a newer v1
// contract) are treated as service events: ignored.
func Classify(kind string) KindClass {
	switch kind {
	case "conversation_started", "message_posted", "page_viewed", "variables_captured",
		"flow_started", "flow_step", "flow_completed", "flow_dropped", "goal_reached",
		"lead_captured", "usage_recorded", "handoff_requested", "agent_joined", "agent_left",
		"conversation_closed", "debug_trace":
		return ClassActivity
	case "marker_added", "location_resolved":
		return ClassAnnotation
	case "conversation_ended", "engagement_classified", "operator_no_response", "late_event_recorded":
		return ClassLifecycle
	}
	return ClassService
}

// ReasonFor maps who closed a conversation to the end reason. A close by
// the system or by nobody in particular is the bot runtime finishing the
// session: END_REASON_BOT_COMPLETED.
func ReasonFor(actor eventv1.Actor) eventv1.EndReason {
	switch actor {
	case eventv1.Actor_ACTOR_VISITOR:
		return eventv1.EndReason_END_REASON_VISITOR_CLOSED
	case eventv1.Actor_ACTOR_AGENT:
		return eventv1.EndReason_END_REASON_AGENT_CLOSED
	case eventv1.Actor_ACTOR_ADMINISTRATOR:
		return eventv1.EndReason_END_REASON_ADMINISTRATOR
	}
	return eventv1.EndReason_END_REASON_BOT_COMPLETED
}

// ClassifyEngagement is the engagement rule: GOAL_COMPLETED when a goal was
// reached, else COMPLETED when a flow reached its end, else ENGAGED when the
// visitor sent at least one message, else NO_REPLY.
func ClassifyEngagement(s State) eventv1.Engagement {
	switch {
	case s.GoalsReached > 0:
		return eventv1.Engagement_ENGAGEMENT_GOAL_COMPLETED
	case s.FlowsCompleted > 0:
		return eventv1.Engagement_ENGAGEMENT_COMPLETED
	case s.VisitorMessages > 0:
		return eventv1.Engagement_ENGAGEMENT_ENGAGED
	}
	return eventv1.Engagement_ENGAGEMENT_NO_REPLY
}

// IsResolved is the resolution rule, applied when a conversation ends: it
// is resolved when nobody was left waiting for an operator (no
// operator_no_response) and either the bot got somewhere (a goal was reached
// or a flow completed) or a live agent took over and closed it.
func IsResolved(s State) bool {
	if s.OperatorNoResponse {
		return false
	}
	if s.GoalsReached > 0 || s.FlowsCompleted > 0 {
		return true
	}
	return !s.TakeoverAt.IsZero() && s.EndReason == eventv1.EndReason_END_REASON_AGENT_CLOSED
}

// Apply applies one event from the log. It is a no-op for an event at or
// below the conversation's applied sequence: an idempotence guard for
// replays (the partitioned consumer hands each conversation its events in
// stream order, so nothing arrives late).
func Apply(s State, ev Event, now time.Time) (State, Output) {
	env := ev.Envelope
	if ev.Seq != 0 && ev.Seq <= s.AppliedSeq {
		return s, Output{}
	}
	if ev.Seq > s.AppliedSeq {
		s.AppliedSeq = ev.Seq
	}
	at := eventTime(env, now)
	kind := eventbus.Kind(env)
	if !s.Exists() {
		s.TenantID, s.ConversationID = env.GetTenantId(), env.GetConversationId()
		s.Status, s.StartedAt, s.LastActivityAt, s.LastRecordedAt = StatusActive, at, at, recordedTime(env, at)
	}
	var out Output
	switch Classify(kind) {
	case ClassService:
		return s, out
	case ClassAnnotation:
		return s, out
	case ClassLifecycle:
		return applyLifecycle(s, ev, at)
	}

	if s.Status == StatusEnded && s.EndSeq != 0 {
		// The log ends the conversation before this event: late.
		s.LateEvents++
		out.Late = true
		out.Emit = append(out.Emit, lateEvent(s, env, now))
		return s, out
	}
	// Active, or ended by a sweep or an administrator whose
	// conversation_ended the log has not reached yet: the event precedes the
	// end in the log and is applied (but it cannot end the conversation
	// again).
	if at.After(s.LastActivityAt) {
		s.LastActivityAt = at
	}
	if rec := recordedTime(env, at); rec.After(s.LastRecordedAt) {
		s.LastRecordedAt = rec
	}
	if at.Before(s.StartedAt) {
		s.StartedAt = at
	}
	switch p := env.GetPayload().(type) {
	case *eventv1.Envelope_ConversationStarted:
		cs := p.ConversationStarted
		if cs.GetChannel() != eventv1.Channel_CHANNEL_UNSPECIFIED {
			s.Channel = cs.GetChannel()
		}
		if cs.GetBotId() != "" {
			s.BotID = cs.GetBotId()
		}
		if cs.GetType() != eventv1.ConversationType_CONVERSATION_TYPE_UNSPECIFIED {
			s.Type = cs.GetType()
		}
		s.DebugEnabled = s.DebugEnabled || cs.GetDebugEnabled()
	case *eventv1.Envelope_MessagePosted:
		s = applyMessage(s, p.MessagePosted, at)
	case *eventv1.Envelope_FlowCompleted:
		s.FlowsCompleted++
	case *eventv1.Envelope_GoalReached:
		s.GoalsReached++
	case *eventv1.Envelope_HandoffRequested:
		s.HandoffRequestedAt, s.HandoffEventID = at, env.GetEventId()
		s.AwaitingAgent = s.Status == StatusActive
	case *eventv1.Envelope_AgentJoined:
		if s.TakeoverAt.IsZero() {
			s.TakeoverAt = at
		}
		s.AgentID, s.AgentName, s.AgentJoinedAt = p.AgentJoined.GetAgentId(), p.AgentJoined.GetAgentName(), at
		s.AwaitingAgent = false
	case *eventv1.Envelope_AgentLeft:
		s.AgentLeftAt = at
	case *eventv1.Envelope_ConversationClosed:
		if s.Status == StatusActive && !ev.EndedLater {
			endedBy := ""
			if p.ConversationClosed.GetClosedBy() == eventv1.Actor_ACTOR_AGENT {
				endedBy = s.AgentID
			}
			s, out = end(s, EndCommand{
				Reason: ReasonFor(p.ConversationClosed.GetClosedBy()), At: at, EndedBy: endedBy,
				CausationID: env.GetEventId(), CorrelationID: correlationOf(env),
			}, now)
			s.EndSeq = ev.Seq
		}
	}
	return s, out
}

func applyMessage(s State, m *eventv1.MessagePosted, at time.Time) State {
	agentPhase := !s.HandoffRequestedAt.IsZero() || !s.AgentJoinedAt.IsZero()
	switch m.GetRole() {
	case eventv1.Role_ROLE_VISITOR:
		s.VisitorMessages++
		if agentPhase && s.PendingVisitorAt.IsZero() {
			s.PendingVisitorAt = at
		}
	case eventv1.Role_ROLE_AGENT:
		if !s.HasFirstResponse {
			ref := s.HandoffRequestedAt
			if ref.IsZero() || (!s.AgentJoinedAt.IsZero() && s.AgentJoinedAt.Before(ref)) {
				// No request, or the agent joined on their own before it.
				ref = s.AgentJoinedAt
			}
			switch {
			case !ref.IsZero():
				s.HasFirstResponse, s.FirstResponseMS = true, millis(at.Sub(ref))
			case m.GetResponseTimeMs() > 0:
				s.HasFirstResponse, s.FirstResponseMS = true, m.GetResponseTimeMs()
			}
		}
		var rt uint32
		replied := false
		switch {
		case m.GetResponseTimeMs() > 0:
			rt, replied = m.GetResponseTimeMs(), true
		case !s.PendingVisitorAt.IsZero():
			rt, replied = millis(at.Sub(s.PendingVisitorAt)), true
		}
		if replied {
			s.AgentReplies++
			s.AgentResponseMSSum += uint64(rt)
		}
		s.PendingVisitorAt = time.Time{}
	}
	return s
}

func applyLifecycle(s State, ev Event, at time.Time) (State, Output) {
	env := ev.Envelope
	var out Output
	switch p := env.GetPayload().(type) {
	case *eventv1.Envelope_ConversationEnded:
		ce := p.ConversationEnded
		switch {
		case s.Status == StatusActive:
			// The log ends it (a sweep or an administrator decided, and the
			// state is being rebuilt from the log): take the end from the
			// event itself and emit nothing; the log already has it all.
			s = endState(s, ce.GetReason(), at, ce.GetEndedBy())
			s.EndSeq = ev.Seq
			out.Ended = true
		case s.Status == StatusEnded && s.EndSeq == 0:
			// Our own end came back: from here on, client facts are late. The
			// log is authoritative, should it record the end differently.
			s.EndSeq = ev.Seq
			s.AwaitingAgent = false
			s.EndedAt, s.EndReason, s.EndedBy = at, ce.GetReason(), ce.GetEndedBy()
		}
	case *eventv1.Envelope_EngagementClassified:
		if s.Status == StatusEnded {
			s.Engagement = p.EngagementClassified.GetEngagement()
			s.Resolved = p.EngagementClassified.GetResolved()
		}
	case *eventv1.Envelope_OperatorNoResponse:
		s.OperatorNoResponse = true
		if env.GetCausationId() != "" && env.GetCausationId() == s.HandoffEventID {
			s.AwaitingAgent = false
		}
	}
	return s, out
}

// End ends an active conversation from outside the log (stale sweep,
// administrator). ok is false, and nothing changes, when it is not active.
func End(s State, cmd EndCommand, now time.Time) (_ State, _ Output, ok bool) {
	if s.Status != StatusActive {
		return s, Output{}, false
	}
	s, out := end(s, cmd, now)
	s.EndSeq = 0
	return s, out, true
}

func end(s State, cmd EndCommand, now time.Time) (State, Output) {
	at := micro(cmd.At)
	s = endState(s, cmd.Reason, at, cmd.EndedBy)
	endedID := EndedEventID(s.TenantID, s.ConversationID)
	correlation := cmd.CorrelationID
	if correlation == "" {
		correlation = endedID
	}
	ended := envelope(s, endedID, cmd.CausationID, correlation, at, now, &eventv1.ConversationEnded{
		Reason: cmd.Reason, LastActivityAt: timestamppb.New(s.LastActivityAt), EndedBy: cmd.EndedBy,
	})
	classified := envelope(s, ClassifiedEventID(s.TenantID, endedID), endedID, correlation, at, now, classification(s))
	return s, Output{Emit: []*eventv1.Envelope{ended, classified}, Ended: true}
}

// classification is the engagement_classified of an ended state: its
// engagement and the agent response times lifecycle owns.
func classification(s State) *eventv1.EngagementClassified {
	c := &eventv1.EngagementClassified{
		Engagement: s.Engagement, Resolved: s.Resolved, VisitorMessages: s.VisitorMessages, GoalsReached: s.GoalsReached,
		AgentReplies: s.AgentReplies, AgentResponseMsSum: s.AgentResponseMSSum, AverageResponseMs: s.AvgResponseMS(),
	}
	if s.HasFirstResponse {
		c.FirstResponseMs = &s.FirstResponseMS
	}
	return c
}

// endState is the part of ending shared by every path, so that a state
// ended by a sweep and one rebuilt from the log are identical.
func endState(s State, reason eventv1.EndReason, at time.Time, endedBy string) State {
	s.Status = StatusEnded
	s.EndedAt, s.EndReason, s.EndedBy = at, reason, endedBy
	s.AwaitingAgent = false
	s.Engagement = ClassifyEngagement(s)
	s.Resolved = IsResolved(s)
	return s
}

// NoResponse reports that no agent answered the latest handoff request. ok
// is false, and nothing changes, unless the conversation is active and
// waiting for an agent.
func NoResponse(s State, now time.Time) (_ State, _ Output, ok bool) {
	if s.Status != StatusActive || !s.AwaitingAgent {
		return s, Output{}, false
	}
	now = micro(now)
	s.AwaitingAgent, s.OperatorNoResponse = false, true
	waited := now.Sub(s.HandoffRequestedAt)
	if waited < 0 {
		waited = 0
	}
	ev := envelope(s, NoResponseEventID(s.TenantID, s.HandoffEventID), s.HandoffEventID, s.HandoffEventID, now, now, &eventv1.OperatorNoResponse{
		HandoffRequestedAt: timestamppb.New(s.HandoffRequestedAt), WaitedSeconds: uint32(waited / time.Second),
	})
	return s, Output{Emit: []*eventv1.Envelope{ev}}, true
}

func lateEvent(s State, late *eventv1.Envelope, now time.Time) *eventv1.Envelope {
	at := micro(now)
	if r := late.GetRecordedAt(); r != nil {
		at = micro(r.AsTime())
	}
	return envelope(s, LateEventID(s.TenantID, late.GetEventId()), late.GetEventId(), correlationOf(late), at, now, &eventv1.LateEventRecorded{
		LateEventId: late.GetEventId(), LateEventKind: eventbus.Kind(late), EndedAt: timestamppb.New(s.EndedAt),
	})
}

// EndedEventID is the id of a conversation's conversation_ended: one per
// conversation by construction, derived from the tenant, the conversation
// and the kind (eventbus.DerivedEventID).
func EndedEventID(tenantID, conversationID string) string {
	return eventbus.DerivedEventID(tenantID, conversationID, "conversation_ended")
}

// ClassifiedEventID is the id of the engagement_classified that follows a
// tenant's conversation_ended.
func ClassifiedEventID(tenantID, endedEventID string) string {
	return eventbus.DerivedEventID(tenantID, endedEventID, "engagement_classified")
}

// NoResponseEventID is the id of the operator_no_response for one of a
// tenant's handoff requests.
func NoResponseEventID(tenantID, handoffEventID string) string {
	return eventbus.DerivedEventID(tenantID, handoffEventID, "operator_no_response")
}

// LateEventID is the id of the late_event_recorded for one of a tenant's late
// events.
func LateEventID(tenantID, lateEventID string) string {
	return eventbus.DerivedEventID(tenantID, lateEventID, "late_event_recorded")
}

func envelope(s State, id, causation, correlation string, occurred, now time.Time, payload proto.Message) *eventv1.Envelope {
	return eventbus.NewEnvelope(s.TenantID, s.ConversationID, payload, eventbus.WithEventID(id),
		eventbus.OccurredAt(occurred), eventbus.RecordedAt(micro(now)), eventbus.Producer(Producer),
		eventbus.CausedBy(causation, correlation))
}

func correlationOf(env *eventv1.Envelope) string {
	if c := env.GetCorrelationId(); c != "" {
		return c
	}
	return env.GetEventId()
}

// eventTime is when an event happened: occurred_at, else recorded_at, else
// now; UTC, microseconds.
func eventTime(env *eventv1.Envelope, now time.Time) time.Time {
	switch {
	case env.GetOccurredAt() != nil:
		return micro(env.GetOccurredAt().AsTime())
	case env.GetRecordedAt() != nil:
		return micro(env.GetRecordedAt().AsTime())
	}
	return micro(now)
}

// recordedTime is when ingest recorded an event: recorded_at, else at (the
// event's time); UTC, microseconds.
func recordedTime(env *eventv1.Envelope, at time.Time) time.Time {
	if r := env.GetRecordedAt(); r != nil {
		return micro(r.AsTime())
	}
	return at
}

func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func millis(d time.Duration) uint32 {
	if d < 0 {
		return 0
	}
	ms := d.Milliseconds()
	if ms > int64(^uint32(0)) {
		return ^uint32(0)
	}
	return uint32(ms)
}
