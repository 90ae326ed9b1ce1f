package lifecycle_test

import (
	"testing"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	lifecyclev1 "github.com/parley-dev/parley/proto/parley/lifecycle/v1"
	"github.com/parley-dev/parley/services/lifecycle"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// recorded publishes a client fact of acme that happened at occurred,
// recorded by ingest at the world's clock.
func (w *world) recorded(conv string, occurred time.Time, payload any) {
	w.t.Helper()
	w.publishRecorded("acme", conv, occurred, w.clock.Now(), payload)
}

// publishRecorded publishes a client fact that happened at occurred and
// that ingest recorded at recorded.
func (w *world) publishRecorded(tenant, conv string, occurred, recorded time.Time, payload any) {
	w.t.Helper()
	env := envelope(tenant, conv, occurred, payload)
	env.RecordedAt = timestamppb.New(recorded)
	w.publishEnv(env)
}

// TestImportedHistoryIsNotStaleBetweenRequests: a conversation imported
// with timestamps of 30 days ago, in two requests with sweeps between them,
// stays active (idle is counted from when ingest recorded its events) and
// ends as stale one session timeout after the last request; a live
// conversation still ends on time.
func TestImportedHistoryIsNotStaleBetweenRequests(t *testing.T) {
	w := newWorld(t, time.Minute)
	s := w.start(w.pgURL, w.key, func(c *lifecycle.Config) { c.SessionTimeout = time.Hour })
	t0 := w.clock.Now()
	old := t0.Add(-30 * 24 * time.Hour)
	endedStale := func(conv string) bool { return w.count("acme", conv, "conversation_ended") == 1 }

	// Request 1 of the import, a live conversation, and one idle for two
	// hours already: its end shows that a sweep ran after the import's
	// first request was applied.
	w.recorded("imp", old, started(eventv1.Channel_CHANNEL_WEB_WIDGET))
	w.recorded("imp", old.Add(time.Minute), visitorMsg("my order from last month"))
	w.recorded("live", t0, started(eventv1.Channel_CHANNEL_WEB_WIDGET))
	w.recorded("live", t0, visitorMsg("hello"))
	w.publishRecorded("acme", "idle", t0.Add(-2*time.Hour), t0.Add(-2*time.Hour), visitorMsg("anyone?"))
	w.waitFor("a sweep to end the idle conversation", func() bool { return endedStale("idle") })
	s.quiet()
	if endedStale("imp") || endedStale("live") {
		t.Fatal("a sweep ended the imported or the live conversation after the import's first request")
	}
	// An administrator's end-stale counts idleness the same way.
	if res, err := s.client.EndStale(s.ctx(), &lifecyclev1.EndStaleRequest{IdleHours: 24}); err != nil || res.Ended != 0 {
		t.Fatalf("end-stale 24h during the import: %v %v", res, err)
	}

	// Request 2, half an hour later.
	w.clock.Advance(30 * time.Minute) // t0+30m
	w.recorded("imp", old.Add(2*time.Minute), &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "It shipped."})
	s.waitState("imp", "request 2 applied", func(st *lifecyclev1.ConversationState) bool {
		return st.LastActivityAt.AsTime().Equal(old.Add(2 * time.Minute))
	})
	s.quiet()
	if endedStale("imp") || endedStale("live") {
		t.Fatal("ended before its timeout")
	}

	// The live conversation ends one hour after its last message.
	w.clock.Advance(40 * time.Minute) // t0+70m
	w.waitFor("live to end after 1h", func() bool { return endedStale("live") })
	s.quiet()
	if endedStale("imp") {
		t.Fatal("the import ended less than an hour after its last request")
	}
	if st := s.state("live"); !st.EndedAt.AsTime().Equal(t0.Add(70 * time.Minute)) {
		t.Fatalf("live: %v", st)
	}

	// The import ends one hour after its last request, as any conversation,
	// with the client's last activity.
	w.clock.Advance(25 * time.Minute) // t0+95m
	w.waitFor("imp to end 1h after its last request", func() bool { return endedStale("imp") })
	s.quiet()
	e := w.events("acme", "imp", "conversation_ended")[0].GetConversationEnded()
	if e.Reason != eventv1.EndReason_END_REASON_STALE_TIMEOUT || !e.LastActivityAt.AsTime().Equal(old.Add(2*time.Minute)) {
		t.Fatalf("imp conversation_ended %v", e)
	}
	if st := s.state("imp"); !ended(st) || !st.EndedAt.AsTime().Equal(t0.Add(95*time.Minute)) {
		t.Fatalf("imp: %v", st)
	}
}
