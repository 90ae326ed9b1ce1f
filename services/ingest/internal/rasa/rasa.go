// Package rasa maps the events that a Rasa assistant (Rasa Open Source 3.x,
// Rasa Pro) publishes to its event broker onto Parley envelopes. It is pure:
// no I/O, no clock. docs/rasa.md documents every mapping row.
package rasa

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// Options configure Map.
type Options struct {
	// BotID is set on conversation_started.
	BotID string
	// Channel, when set, is the channel of every conversation_started.
	// Otherwise the channel is derived from the event's input_channel
	// (CHANNEL_API when that is absent or unknown).
	Channel eventv1.Channel
	// UnidentifiedIntents mark a visitor message as unidentified. nil means
	// DefaultUnidentifiedIntents; an empty, non-nil slice marks none.
	UnidentifiedIntents []string
	// FallbackActions are not stored as debug traces, and a bot message whose
	// metadata.utter_action is one of them is marked unidentified. nil means
	// DefaultFallbackActions; an empty, non-nil slice means none.
	FallbackActions []string
}

// DefaultUnidentifiedIntents returns the intents Rasa's FallbackClassifier
// and the usual out-of-scope intent produce.
func DefaultUnidentifiedIntents() []string { return []string{"nlu_fallback", "out_of_scope"} }

// DefaultFallbackActions returns Rasa's default fallback actions and response.
func DefaultFallbackActions() []string {
	return []string{"action_default_fallback", "utter_default", "action_two_stage_fallback"}
}

// Result is what Map made of the input. Every input event ends up either in
// Events or in Skipped, so Events[i] comes from the i-th input index that is
// not in Skipped.
type Result struct {
	// Events are the mapped request envelopes (eventbus.NewEnvelope without
	// tenant) in input order. EventId, TenantId, RecordedAt and Producer are
	// left for ingest to fill.
	Events []*eventv1.Envelope
	// Skipped lists the events deliberately not stored.
	Skipped []Skip
}

// Skip is an input event that was deliberately not stored.
type Skip struct {
	// Index is the event's position in the input (0-based).
	Index int
	// Event is the Rasa event type, e.g. "user_featurization".
	Event string
	// Reason says why it was not stored.
	Reason string
}

// FieldError reports malformed input: the event at Index lacks Field or has
// an invalid value in it. Field is "" when the event as a whole is malformed
// (not JSON, not an object) or the input holds no events.
type FieldError struct {
	Index  int
	Field  string
	Reason string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("rasa: events[%d]: %s", e.Index, e.Reason)
	}
	return fmt.Sprintf("rasa: events[%d].%s: %s", e.Index, e.Field, e.Reason)
}

// Map maps Rasa event-broker messages onto envelopes. raw is one message (a
// JSON object), a JSON array of them, newline-delimited JSON (e.g. the file
// of Rasa's FileEventBroker), or a tracker as returned by Rasa's
// GET /conversations/<id>/tracker (an object with sender_id and events).
// The result is deterministic: the same input always yields the same
// envelopes, including ClientEventId. Map returns a *FieldError, and no
// result, when any event is malformed.
func Map(opts Options, raw []byte) (Result, error) {
	events, sender, err := split(raw)
	if err != nil {
		return Result{}, err
	}
	m := newMapper(opts)
	res := Result{Events: make([]*eventv1.Envelope, 0, len(events))}
	for i, rawEvent := range events {
		e, err := parseEvent(i, rawEvent, sender)
		if err != nil {
			return Result{}, err
		}
		env, reason := m.mapEvent(e)
		if env == nil {
			res.Skipped = append(res.Skipped, Skip{Index: i, Event: e.typ, Reason: reason})
			continue
		}
		env.ConversationId = ConversationID(e.sender)
		env.OccurredAt = e.occurredAt
		env.ClientEventId = e.clientID
		res.Events = append(res.Events, env)
	}
	return res, nil
}

// ConversationID returns the Parley conversation id of a Rasa sender_id: the
// sender_id itself when it is a valid conversation id ([A-Za-z0-9_-]{1,128}),
// else "rasa-" followed by the first 32 hex digits of its SHA-256.
func ConversationID(senderID string) string {
	if eventbus.ValidConversationID(senderID) {
		return senderID
	}
	sum := sha256.Sum256([]byte(senderID))
	return "rasa-" + hex.EncodeToString(sum[:16])
}

// split returns the raw events of the input and, for a tracker, its
// sender_id (the default for events without one).
func split(raw []byte) ([]json.RawMessage, string, error) {
	data := bytes.TrimSpace(bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf")))
	if len(data) == 0 {
		return nil, "", &FieldError{Reason: "no events"}
	}
	var events []json.RawMessage
	var err error
	if data[0] == '[' {
		events, err = splitArray(data)
	} else {
		events, err = splitStream(data)
	}
	if err != nil {
		return nil, "", err
	}
	sender := ""
	if len(events) == 1 {
		events, sender, err = unwrapTracker(events)
		if err != nil {
			return nil, "", err
		}
	}
	if len(events) == 0 {
		return nil, "", &FieldError{Reason: "no events"}
	}
	return events, sender, nil
}

// splitArray splits a JSON array into its elements.
func splitArray(data []byte) ([]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return nil, invalidJSON(0, err)
	}
	var out []json.RawMessage
	for dec.More() {
		var ev json.RawMessage
		if err := dec.Decode(&ev); err != nil {
			return nil, invalidJSON(len(out), err)
		}
		out = append(out, ev)
	}
	tok, err := dec.Token()
	if err != nil {
		return nil, invalidJSON(len(out), err)
	}
	if d, ok := tok.(json.Delim); !ok || d != ']' {
		return nil, &FieldError{Index: len(out), Reason: "invalid JSON: unterminated array"}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &FieldError{Index: len(out), Reason: "invalid JSON: data after the array"}
	}
	return out, nil
}

// splitStream splits one or more JSON values separated by whitespace (a
// single message or newline-delimited JSON).
func splitStream(data []byte) ([]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var out []json.RawMessage
	for {
		var ev json.RawMessage
		err := dec.Decode(&ev)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, invalidJSON(len(out), err)
		}
		out = append(out, ev)
	}
}

// unwrapTracker replaces a single tracker object (no "event", an "events"
// array) by its events.
func unwrapTracker(events []json.RawMessage) ([]json.RawMessage, string, error) {
	var obj map[string]json.RawMessage
	if json.Unmarshal(events[0], &obj) != nil || obj == nil {
		return events, "", nil // reported by parseEvent
	}
	if _, ok := obj["event"]; ok {
		return events, "", nil
	}
	list, ok := obj["events"]
	if !ok {
		return events, "", nil
	}
	var inner []json.RawMessage
	if err := json.Unmarshal(list, &inner); err != nil || inner == nil {
		return nil, "", &FieldError{Field: "events", Reason: "must be an array of events"}
	}
	sender, _ := scalar(obj["sender_id"])
	return inner, sender, nil
}

func invalidJSON(i int, err error) *FieldError {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &FieldError{Index: i, Reason: "invalid JSON: unexpected end of input"}
	}
	return &FieldError{Index: i, Reason: "invalid JSON: " + err.Error()}
}
