package store_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/lifecycle/internal/machine"
	"github.com/parley-dev/parley/services/lifecycle/internal/store"
)

// TestSaveRoundTrip writes states with every field set and with every
// nullable field empty in one Save, and reads them back unchanged, with
// stale_at from the right session timeout.
func TestSaveRoundTrip(t *testing.T) {
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t), MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := store.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	s := store.New(pool, time.Hour)
	if _, err := s.SyncDefaults(ctx, map[string]time.Duration{"CHANNEL_SMS": 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTimeout(ctx, "acme", "CHANNEL_WHATSAPP", 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTimeout(ctx, "acme", store.AllChannels, 3*time.Hour); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2030, 1, 2, 3, 4, 5, 6000, time.UTC)
	full := machine.State{
		TenantID: "acme", ConversationID: "full", Status: machine.StatusEnded, Channel: eventv1.Channel_CHANNEL_WHATSAPP, BotID: "bot",
		Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE, StartedAt: at, LastActivityAt: at.Add(time.Minute), LastRecordedAt: at.Add(time.Hour),
		EndedAt: at.Add(2 * time.Minute), EndReason: eventv1.EndReason_END_REASON_AGENT_CLOSED, EndedBy: "ann", EndSeq: 7,
		HandoffRequestedAt: at.Add(3 * time.Second), HandoffEventID: "h", AwaitingAgent: true, OperatorNoResponse: true,
		TakeoverAt: at.Add(4 * time.Second), AgentID: "ann", AgentName: "Ann", AgentJoinedAt: at.Add(5 * time.Second), AgentLeftAt: at.Add(6 * time.Second),
		PendingVisitorAt: at.Add(7 * time.Second), HasFirstResponse: true, FirstResponseMS: 0, AgentReplies: 2, AgentResponseMSSum: 3000,
		VisitorMessages: 4, GoalsReached: 5, FlowsCompleted: 6, LateEvents: 7, Engagement: eventv1.Engagement_ENGAGEMENT_COMPLETED, Resolved: true, AppliedSeq: 9,
	}
	empty := machine.State{TenantID: "acme", ConversationID: "empty", Status: machine.StatusActive, StartedAt: at, LastActivityAt: at, LastRecordedAt: at.Add(-time.Hour), AppliedSeq: 3}
	sms := machine.State{TenantID: "globex", ConversationID: "sms", Status: machine.StatusActive, Channel: eventv1.Channel_CHANNEL_SMS, StartedAt: at, LastActivityAt: at, AppliedSeq: 4}
	web := machine.State{TenantID: "globex", ConversationID: "web", Status: machine.StatusActive, Channel: eventv1.Channel_CHANNEL_WEB_WIDGET, StartedAt: at, LastActivityAt: at, AppliedSeq: 5}
	states := []machine.State{full, empty, sms, web}
	for range 2 { // insert, then update the same rows
		if err := s.Tx(ctx, func(tx pgx.Tx) error { return s.Save(ctx, tx, store.Change{States: states, Position: 9}) }); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range states {
		got, err := s.Get(ctx, want.TenantID, want.ConversationID)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s:\n got %+v\nwant %+v", want.ConversationID, got, want)
		}
	}
	// Idle since the later of the last activity and its recording.
	idle := map[string]time.Time{"full": at.Add(time.Hour), "empty": at, "sms": at, "web": at}
	for conv, timeout := range map[string]time.Duration{"full": 2 * time.Hour, "empty": 3 * time.Hour, "sms": 10 * time.Minute, "web": time.Hour} {
		var staleAt time.Time
		if err := pool.QueryRow(ctx, `SELECT stale_at FROM lifecycle_conversations WHERE conversation_id = $1`, conv).Scan(&staleAt); err != nil {
			t.Fatal(err)
		}
		last := idle[conv]
		var fn time.Time
		if err := pool.QueryRow(ctx, `SELECT $2::timestamptz + make_interval(secs => lifecycle_session_timeout(tenant_id, channel, 3600))
			FROM lifecycle_conversations WHERE conversation_id = $1`, conv, last).Scan(&fn); err != nil {
			t.Fatal(err)
		}
		if d := staleAt.Sub(last); d != timeout || !staleAt.Equal(fn) {
			t.Fatalf("%s: stale_at %v after the last activity (lifecycle_session_timeout: %v), want %v", conv, d, fn.Sub(last), timeout)
		}
	}
}
