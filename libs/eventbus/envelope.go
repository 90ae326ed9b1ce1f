package eventbus

import (
	"fmt"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// EnvelopeOption sets an optional field of an envelope NewEnvelope or Derive
// fills.
type EnvelopeOption func(*eventv1.Envelope)

// WithEventID sets the event id (a deterministic one: DerivedEventID,
// ClientEventID) instead of a new one.
func WithEventID(id string) EnvelopeOption {
	return func(e *eventv1.Envelope) { e.EventId = id }
}

// OccurredAt sets when the event happened.
func OccurredAt(t time.Time) EnvelopeOption {
	return func(e *eventv1.Envelope) { e.OccurredAt = timestamppb.New(t) }
}

// OccurredAtTimestamp sets when the event happened as given (nil leaves it
// unset), e.g. a client's occurred_at before validation.
func OccurredAtTimestamp(ts *timestamppb.Timestamp) EnvelopeOption {
	return func(e *eventv1.Envelope) { e.OccurredAt = ts }
}

// WithClientEventID sets the client's event id; when the envelope has a
// tenant and no option sets the event id, the event id is then
// ClientEventID(tenant, conversation, id), so a resend is a duplicate.
func WithClientEventID(id string) EnvelopeOption {
	return func(e *eventv1.Envelope) { e.ClientEventId = id }
}

// RecordedAt sets when Parley recorded the event (Bus.Complete fills it on
// publishing when unset).
func RecordedAt(t time.Time) EnvelopeOption {
	return func(e *eventv1.Envelope) { e.RecordedAt = timestamppb.New(t) }
}

// Producer sets the producing service (Bus.Complete fills it on publishing
// when unset).
func Producer(name string) EnvelopeOption {
	return func(e *eventv1.Envelope) { e.Producer = name }
}

// CausedBy sets the causation id and the correlation id; an empty
// correlation id becomes the causation id.
func CausedBy(causationID, correlationID string) EnvelopeOption {
	return func(e *eventv1.Envelope) {
		if correlationID == "" {
			correlationID = causationID
		}
		e.CausationId, e.CorrelationId = causationID, correlationID
	}
}

// NewEnvelope returns an event of a tenant's conversation carrying payload,
// the event message itself (e.g. &eventv1.TagApplied{...}), with its kind
// set, an event id (set by an option, derived from WithClientEventID, or
// new) and, without CausedBy, a correlation of its own (its event id). With
// tenant "" it is a request to ingest, which assigns the tenant of the
// caller's key: it gets no event id or correlation (ingest assigns them
// after validation). It panics when payload is not one of the envelope's
// payload messages: a programming error.
func NewEnvelope(tenant, conversation string, payload proto.Message, opts ...EnvelopeOption) *eventv1.Envelope {
	env := &eventv1.Envelope{TenantId: tenant, ConversationId: conversation}
	SetPayload(env, payload)
	for _, o := range opts {
		o(env)
	}
	if tenant == "" {
		return env
	}
	if env.EventId == "" && env.ClientEventId != "" {
		env.EventId = ClientEventID(tenant, conversation, env.ClientEventId)
	}
	if env.EventId == "" {
		env.EventId = NewEventID()
	}
	if env.CorrelationId == "" {
		env.CorrelationId = env.EventId
	}
	return env
}

// Derive returns the event cause leads to: same tenant and conversation,
// occurred when the cause did, caused by it and in its correlation (the
// cause's own id when it has none), with the deterministic id
// DerivedEventID(tenant, cause's id, kind) unless an option sets one.
func Derive(cause *eventv1.Envelope, payload proto.Message, opts ...EnvelopeOption) *eventv1.Envelope {
	env := &eventv1.Envelope{TenantId: cause.GetTenantId(), ConversationId: cause.GetConversationId(), OccurredAt: cause.GetOccurredAt()}
	SetPayload(env, payload)
	env.EventId = DerivedEventID(env.TenantId, cause.GetEventId(), env.Kind)
	corr := cause.GetCorrelationId()
	if corr == "" {
		corr = cause.GetEventId()
	}
	env.CausationId, env.CorrelationId = cause.GetEventId(), corr
	for _, o := range opts {
		o(env)
	}
	return env
}

// SetPayload sets env's payload to the event message payload and its kind.
// It panics when payload is not one of the envelope's payload messages.
func SetPayload(env *eventv1.Envelope, payload proto.Message) {
	fd := payloadField(payload)
	env.ProtoReflect().Set(fd, protoreflect.ValueOfMessage(payload.ProtoReflect()))
	env.Kind = string(fd.Name())
}

// payloadField is the payload oneof field holding messages of payload's
// type.
func payloadField(payload proto.Message) protoreflect.FieldDescriptor {
	name := payload.ProtoReflect().Descriptor().FullName()
	fields := payloadOneof.Fields()
	var found protoreflect.FieldDescriptor
	for i := range fields.Len() {
		if fd := fields.Get(i); fd.Message() != nil && fd.Message().FullName() == name {
			if found != nil {
				panic(fmt.Sprintf("eventbus: %s is the payload of %s and %s", name, found.Name(), fd.Name()))
			}
			found = fd
		}
	}
	if found == nil {
		panic(fmt.Sprintf("eventbus: %s is not an envelope payload", name))
	}
	return found
}
