// Package validate checks client-supplied events before they are appended.
// It is pure: no I/O, no clock of its own.
package validate

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// Limits bound what one request may carry. They are documented in
// docs/events.md and the README.
type Limits struct {
	// MaxBatch is the most events in one Append request.
	MaxBatch int
	// MaxTextBytes is the longest message text, in bytes.
	MaxTextBytes int
	// MaxFutureSkew is how far occurred_at may lie ahead of the server clock.
	MaxFutureSkew time.Duration
	// MaxStreamEvents and MaxStreamRequests bound one AppendStream call
	// (0: unbounded).
	MaxStreamEvents   int
	MaxStreamRequests int
}

// DefaultLimits are the limits unless configured otherwise.
var DefaultLimits = Limits{MaxBatch: 1000, MaxTextBytes: 16 << 10, MaxFutureSkew: 5 * time.Minute, MaxStreamEvents: 100_000, MaxStreamRequests: 10_000}

// MinOccurredAt is the earliest accepted event time (ClickHouse DateTime
// cannot hold times before 1970; no chatbot spoke before 2000).
var MinOccurredAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Violation names the offending field and what is wrong with it.
type Violation struct {
	Field       string
	Description string
}

func (v Violation) Error() string { return v.Field + ": " + v.Description }

// Envelope checks one client event at index i of a batch. tenant is the
// caller's tenant; now is the server clock.
func Envelope(l Limits, i int, env *eventv1.Envelope, tenant string, now time.Time) *Violation {
	at := func(field, format string, args ...any) *Violation {
		return &Violation{Field: fmt.Sprintf("events[%d].%s", i, field), Description: fmt.Sprintf(format, args...)}
	}
	if env == nil {
		return at("", "event is empty")
	}
	if env.TenantId != "" && env.TenantId != tenant {
		return at("tenant_id", "must be empty or the API key's tenant")
	}
	if !eventbus.ValidConversationID(env.ConversationId) {
		return at("conversation_id", "required; 1-128 characters of A-Z a-z 0-9 _ -")
	}
	if env.EventId != "" {
		if _, err := uuid.Parse(env.EventId); err != nil {
			return at("event_id", "must be a UUID when set")
		}
	}
	if len(env.ClientEventId) > 128 || !utf8.ValidString(env.ClientEventId) {
		return at("client_event_id", "at most 128 bytes of UTF-8")
	}
	if ts := env.OccurredAt; ts != nil {
		if err := ts.CheckValid(); err != nil {
			return at("occurred_at", "invalid timestamp")
		}
		if ts.AsTime().Before(MinOccurredAt) {
			return at("occurred_at", "before %s", MinOccurredAt.Format(time.DateOnly))
		}
		if ts.AsTime().After(now.Add(l.MaxFutureSkew)) {
			return at("occurred_at", "lies more than %s in the future", l.MaxFutureSkew)
		}
	}
	switch p := env.Payload.(type) {
	case nil:
		return at("payload", "exactly one payload is required")
	case *eventv1.Envelope_MessagePosted:
		m := p.MessagePosted
		if m.Role == eventv1.Role_ROLE_UNSPECIFIED {
			return at("message_posted.role", "required")
		}
		if _, ok := eventv1.Role_name[int32(m.Role)]; !ok {
			return at("message_posted.role", "unknown value %d", m.Role)
		}
		if len(m.Text) > l.MaxTextBytes {
			return at("message_posted.text", "longer than %d bytes", l.MaxTextBytes)
		}
		if !utf8.ValidString(m.Text) {
			return at("message_posted.text", "not valid UTF-8")
		}
	}
	if serverOnly[eventbus.Kind(env)] {
		return at("payload", "%s events are emitted by Parley itself (lifecycle or tagging), not by clients", eventbus.Kind(env))
	}
	return Fields(env.ProtoReflect(), fmt.Sprintf("events[%d]", i), l.MaxTextBytes)
}

// serverOnly lists the kinds that only Parley's own services append:
// lifecycle's state transitions and tagging's tags, labels, flags and issues
// (labels and flags are commands on the tagging service).
var serverOnly = map[string]bool{
	"conversation_ended": true, "engagement_classified": true, "operator_no_response": true, "late_event_recorded": true,
	"tag_applied": true, "tag_removed": true, "label_added": true, "label_removed": true,
	"flagged": true, "unflagged": true, "issue_detected": true,
}

// ServerOnly reports whether clients may not send kind.
func ServerOnly(kind string) bool { return serverOnly[kind] }
