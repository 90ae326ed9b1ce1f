package rasa

import (
	"errors"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

func FuzzMap(f *testing.F) {
	for _, name := range []string{"moodbot_tracker.jsonl", "calm_transfer_money.jsonl"} {
		raw := readFixture(f, name)
		f.Add(raw)
		for _, l := range lines(raw) {
			f.Add(l)
		}
	}
	for _, s := range []string{
		"", "[]", "null", "[null]", `{"events": []}`,
		`{"sender_id": "s1", "events": [{"event": "restart", "timestamp": 1}]}`,
		`{"sender_id": "a b", "event": "user", "timestamp": "1767612345.5", "text": "\xff"}`,
		`{"sender_id": 1, "event": "slot", "timestamp": 253402300799.9999999, "name": "x", "value": [1, {"a": "\u00e9"}]}`,
		`{"sender_id": "s", "event": "bot", "timestamp": -62135596800, "data": {"image": {}, "attachment": 1, "buttons": [{"title": 3}]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		res, err := Map(Options{BotID: "b"}, raw)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is %T, want *FieldError", err, err)
			}
			if len(res.Events) != 0 || len(res.Skipped) != 0 {
				t.Fatalf("result with error")
			}
			return
		}
		if len(res.Events)+len(res.Skipped) == 0 {
			t.Fatal("no events and no error")
		}
		for _, s := range res.Skipped {
			if s.Reason == "" {
				t.Fatalf("skip without reason: %+v", s)
			}
		}
		checkEnvelopesNoDup(t, res.Events)
	})
}

// checkEnvelopesNoDup is checkEnvelopes without the uniqueness check: fuzzed
// input may legitimately repeat a message.
func checkEnvelopesNoDup(t *testing.T, envs []*eventv1.Envelope) {
	t.Helper()
	for i, env := range envs {
		checkEnvelopes(t, []*eventv1.Envelope{env})
		if t.Failed() {
			t.Fatalf("event %d: %v", i, env)
		}
	}
}
