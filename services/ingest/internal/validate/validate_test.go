package validate

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func msg(conv, text string) *eventv1.Envelope {
	return &eventv1.Envelope{ConversationId: conv, Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text}}}
}

func TestEnvelope(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name  string
		env   *eventv1.Envelope
		field string
	}{
		{"valid", msg("c1", "hello"), ""},
		{"nil", nil, "events[0]."},
		{"bad conversation", msg("c 1", "x"), "events[0].conversation_id"},
		{"empty conversation", msg("", "x"), "events[0].conversation_id"},
		{"other tenant", func() *eventv1.Envelope { e := msg("c", "x"); e.TenantId = "other"; return e }(), "events[0].tenant_id"},
		{"own tenant", func() *eventv1.Envelope { e := msg("c", "x"); e.TenantId = "acme"; return e }(), ""},
		{"bad event id", func() *eventv1.Envelope { e := msg("c", "x"); e.EventId = "nope"; return e }(), "events[0].event_id"},
		{"future", func() *eventv1.Envelope {
			e := msg("c", "x")
			e.OccurredAt = timestamppb.New(now.Add(time.Hour))
			return e
		}(), "events[0].occurred_at"},
		{"no payload", &eventv1.Envelope{ConversationId: "c"}, "events[0].payload"},
		{"no role", &eventv1.Envelope{ConversationId: "c", Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Text: "x"}}}, "events[0].message_posted.role"},
		{"text too long", msg("c", strings.Repeat("a", DefaultLimits.MaxTextBytes+1)), "events[0].message_posted.text"},
		{"bad utf8", msg("c", "\xff"), "events[0].message_posted.text"},
		{"tagging kind", &eventv1.Envelope{ConversationId: "c", Payload: &eventv1.Envelope_TagApplied{TagApplied: &eventv1.TagApplied{Tag: "x"}}}, "events[0].payload"},
		{"client kind", &eventv1.Envelope{ConversationId: "c", Payload: &eventv1.Envelope_PageViewed{PageViewed: &eventv1.PageViewed{Url: "https://x"}}}, ""},
		{"ancient", func() *eventv1.Envelope {
			e := msg("c", "x")
			e.OccurredAt = timestamppb.New(time.Unix(-5, 0))
			return e
		}(), "events[0].occurred_at"},
		{"server-only kind", &eventv1.Envelope{ConversationId: "c", Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{}}}, "events[0].payload"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := Envelope(DefaultLimits, 0, c.env, "acme", now)
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

func FuzzEnvelope(f *testing.F) {
	f.Add("c1", "hello", "", int32(1), "bot", "k", "v", int32(1))
	f.Add("a_b-c", "\xff", "not-a-uuid", int32(9), "b\x00", "", "\xc3\x28", int32(40))
	f.Fuzz(func(t *testing.T, conv, text, eventID string, role int32, botID, key, value string, channel int32) {
		envs := []*eventv1.Envelope{
			{ConversationId: conv, EventId: eventID, Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role(role), Text: text}}},
			{ConversationId: conv, Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{
				BotId: botID, Channel: eventv1.Channel(channel), Variables: map[string]string{key: value}, Visitor: &eventv1.Visitor{Token: text}}}},
		}
		strs := [][]string{{conv, text, eventID}, {conv, text, botID, key, value}}
		for k, env := range envs {
			v := Envelope(DefaultLimits, 3, env, "t", time.Now())
			if v != nil {
				if !strings.HasPrefix(v.Field, "events[3].") {
					t.Fatalf("violation field %q lacks the event index", v.Field)
				}
				continue
			}
			// Accepted: every string is storable and bounded.
			for _, s := range strs[k] {
				if !utf8.ValidString(s) || strings.ContainsRune(s, 0) || len(s) > DefaultLimits.MaxTextBytes {
					t.Fatalf("accepted an unstorable string %q", s)
				}
			}
			if k == 1 && (len(botID) > DefaultStringBytes || len(key) > DefaultMapKeyBytes || len(value) > DefaultMapValueBytes) {
				t.Fatalf("accepted an oversized field: bot %d, key %d, value %d bytes", len(botID), len(key), len(value))
			}
		}
	})
}
