// Package eventbus is Parley's access to the conversation event log on NATS
// JetStream: stream setup, publishing envelopes with Nats-Msg-Id and trace
// context, and batched durable consumption with explicit acks, bounded
// redelivery and a dead-letter stream.
package eventbus

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Stream and subject names. They are part of the public contract (docs/events.md).
const (
	// ConvStream holds every conversation event.
	ConvStream = "PARLEY_CONV"
	// ConvSubjectPrefix prefixes conversation subjects:
	// parley.conv.v1.<tenant>.<conversation>.<kind>.
	ConvSubjectPrefix = "parley.conv.v1"
	// DLQStream holds messages that consumers gave up on.
	DLQStream = "PARLEY_DLQ"
	// DLQSubjectPrefix prefixes dead letters: parley.dlq.<consumer>.
	DLQSubjectPrefix = "parley.dlq"
)

// Header names Parley sets on messages besides Nats-Msg-Id and traceparent.
const (
	HeaderKind        = "Parley-Kind"
	HeaderDLQSubject  = "Parley-Dlq-Subject"
	HeaderDLQSequence = "Parley-Dlq-Stream-Seq"
	HeaderDLQConsumer = "Parley-Dlq-Consumer"
	HeaderDLQError    = "Parley-Dlq-Error"
	HeaderDLQAttempts = "Parley-Dlq-Deliveries"
)

var (
	tenantRe       = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	conversationRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)
)

// ValidTenantID reports whether id is a subject-safe tenant id.
func ValidTenantID(id string) bool { return tenantRe.MatchString(id) }

// ValidConversationID reports whether id is a subject-safe conversation id.
func ValidConversationID(id string) bool { return conversationRe.MatchString(id) }

// ConvSubject returns the subject of one event.
func ConvSubject(tenant, conversation, kind string) string {
	return ConvSubjectPrefix + "." + tenant + "." + conversation + "." + kind
}

// TenantSubjects returns the subject filter for all of a tenant's events.
func TenantSubjects(tenant string) string { return ConvSubjectPrefix + "." + tenant + ".>" }

// ParseConvSubject splits a conversation subject into its parts.
func ParseConvSubject(subject string) (tenant, conversation, kind string, err error) {
	rest, ok := strings.CutPrefix(subject, ConvSubjectPrefix+".")
	if !ok {
		return "", "", "", fmt.Errorf("eventbus: %q is not a conversation subject", subject)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("eventbus: %q is not a conversation subject", subject)
	}
	return parts[0], parts[1], parts[2], nil
}

// ErrNoPayload is returned for an envelope without a payload.
var ErrNoPayload = errors.New("eventbus: envelope has no payload")

var payloadOneof = (&eventv1.Envelope{}).ProtoReflect().Descriptor().Oneofs().ByName("payload")

// Kind returns the snake-case kind of an envelope's payload (its oneof field
// name, e.g. "message_posted"), or "" when no payload is set.
func Kind(env *eventv1.Envelope) string {
	fd := env.ProtoReflect().WhichOneof(payloadOneof)
	if fd == nil {
		return ""
	}
	return string(fd.Name())
}

// Kinds lists every payload kind of the v1 contract, in field order.
func Kinds() []string {
	fields := payloadOneof.Fields()
	out := make([]string, 0, fields.Len())
	for i := range fields.Len() {
		out = append(out, string(fields.Get(i).Name()))
	}
	return out
}

// IsKind reports whether kind names a v1 payload.
func IsKind(kind string) bool {
	return payloadOneof.Fields().ByName(protoreflect.Name(kind)) != nil
}
