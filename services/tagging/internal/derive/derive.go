// Package derive builds the events tagging derives (TagApplied, TagRemoved,
// IssueDetected) with deterministic ids: the same cause always yields the
// same id, so a retried transaction, a redelivered event or a republished
// outbox row is dropped by JetStream (Nats-Msg-Id) and recognised by every
// consumer that keys on event_id.
package derive

import (
	"strconv"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Trigger is the event after which a condition held.
type Trigger struct {
	TenantID, ConversationID string
	EventID                  string
	Seq                      uint64
	OccurredAt               *timestamppb.Timestamp
	// CorrelationID groups the derived events with their cause (the
	// trigger's correlation id, or a backfill run's id).
	CorrelationID string
}

// TriggerOf describes env, stored at seq.
func TriggerOf(env *eventv1.Envelope, seq uint64) Trigger {
	return Trigger{
		TenantID: env.GetTenantId(), ConversationID: env.GetConversationId(), EventID: env.GetEventId(), Seq: seq,
		OccurredAt: env.GetOccurredAt(), CorrelationID: env.GetCorrelationId(),
	}
}

// cause names the trigger within its tenant (eventbus.DerivedEventID adds the
// tenant).
func (t Trigger) cause() string { return t.ConversationID + "/" + t.EventID }

func (t Trigger) envelope(id string, now time.Time, payload proto.Message) *eventv1.Envelope {
	at := now
	if t.OccurredAt != nil {
		at = t.OccurredAt.AsTime()
	}
	return eventbus.NewEnvelope(t.TenantID, t.ConversationID, payload, eventbus.WithEventID(id),
		eventbus.OccurredAt(at), eventbus.CausedBy(t.EventID, t.CorrelationID))
}

// TagApplied is the event of a rule or detector applying tag after t. Its id
// depends on the trigger, the rule, its version, the tag and the source, so
// a later re-application (after a removal) is a new event.
func TagApplied(t Trigger, ruleID string, version int64, tag string, src eventv1.TagSource, now time.Time) *eventv1.Envelope {
	id := eventbus.DerivedEventID(t.TenantID, t.cause(), "tag_applied/"+src.String()+"/"+ruleID+"/"+strconv.FormatInt(version, 10)+"/"+tag)
	return t.envelope(id, now, &eventv1.TagApplied{Tag: tag, RuleId: ruleID, Source: src})
}

// IssueDetected is the event of a detector finding an issue after t.
func IssueDetected(t Trigger, detector, messageID, details string, now time.Time) *eventv1.Envelope {
	id := eventbus.DerivedEventID(t.TenantID, t.cause(), "issue_detected/"+detector)
	return t.envelope(id, now, &eventv1.IssueDetected{
		Issue: detector, Detector: "builtin:" + detector, MessageId: messageID, Details: details,
	})
}

// TagRemoved is the event of taking off the tag that the TagApplied event
// appliedEventID put on: one removal per application.
func TagRemoved(tenant, conv, appliedEventID, ruleID, tag string, src eventv1.TagSource, correlationID string, now time.Time) *eventv1.Envelope {
	id := eventbus.DerivedEventID(tenant, conv+"/"+appliedEventID, "tag_removed")
	return eventbus.NewEnvelope(tenant, conv, &eventv1.TagRemoved{Tag: tag, RuleId: ruleID, Source: src},
		eventbus.WithEventID(id), eventbus.OccurredAt(now), eventbus.CausedBy(appliedEventID, correlationID))
}
