package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	lifecyclev1 "github.com/parley-dev/parley/proto/parley/lifecycle/v1"
	"github.com/parley-dev/parley/services/lifecycle"
	"github.com/parley-dev/parley/services/lifecycle/internal/consumer"
	"github.com/parley-dev/parley/services/lifecycle/internal/machine"
	"github.com/parley-dev/parley/services/lifecycle/internal/store"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// clock is the controllable time source the service sweeps with.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// world is what outlives one run of the service: NATS, PostgreSQL, the
// clock, a publisher standing in for ingest, and an API key.
type world struct {
	t      *testing.T
	nats   *testenv.NATSServer
	pgURL  string
	bus    *eventbus.Bus
	clock  *clock
	key    string
	keyID  string
	window time.Duration
}

func newWorld(t *testing.T, window time.Duration) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{t: t, nats: testenv.NATS(t), pgURL: testenv.Postgres(t), window: window,
		clock: &clock{t: time.Now().UTC().Truncate(time.Second)}}
	w.key, w.keyID = w.createKey(w.pgURL)
	bus, err := eventbus.Connect(ctx, w.nats.URL, "test-ingest", eventbus.Options{Producer: "ingest", DuplicateWindow: window})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	w.bus = bus
	return w
}

// createKey creates tenant acme with an admin key in the database at url.
func (w *world) createKey(url string) (key, keyID string) {
	w.t.Helper()
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: url})
	if err != nil {
		w.t.Fatal(err)
	}
	defer pool.Close()
	if err := tenancy.Migrate(ctx, pool, nil); err != nil {
		w.t.Fatal(err)
	}
	s := tenancy.NewStore(pool)
	if err := s.CreateTenant(ctx, "acme", ""); err != nil {
		w.t.Fatal(err)
	}
	key, keyID, err = s.CreateAPIKey(ctx, "acme", "test", []string{grpcx.ScopeAdmin})
	if err != nil {
		w.t.Fatal(err)
	}
	return key, keyID
}

// svc is one run of the lifecycle service.
type svc struct {
	w      *world
	admin  string
	pgURL  string
	key    string
	pool   *pgxpool.Pool
	client lifecyclev1.LifecycleServiceClient
	cancel context.CancelFunc
	done   chan error
}

// start runs lifecycle on the world's NATS with the database at pgURL.
func (w *world) start(pgURL, key string, mod func(*lifecycle.Config)) *svc {
	w.t.Helper()
	gport, _ := localinfra.FreePort()
	aport, _ := localinfra.FreePort()
	cfg := lifecycle.Config{
		Config: service.Config{Server: config.Server{ShutdownTimeout: 5 * time.Second}, NATS: config.NATS{URL: w.nats.URL, Replicas: 1, DuplicateWindow: w.window},
			Postgres: config.Postgres{URL: pgURL, MaxConns: 6}, GRPCAddr: fmt.Sprintf("127.0.0.1:%d", gport), AdminAddr: fmt.Sprintf("127.0.0.1:%d", aport),
			Telemetry: testenv.Telemetry(w.t, "lifecycle")},
		SessionTimeout: 24 * time.Hour, HandoffTimeout: 5 * time.Minute, SweepInterval: 20 * time.Millisecond, ConsumerBatch: 100,
		Clock: w.clock.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &svc{w: w, admin: cfg.AdminAddr, pgURL: pgURL, key: key, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- lifecycle.Run(ctx, cfg) }()
	w.t.Cleanup(s.stop)
	conn, err := grpc.NewClient(cfg.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5, MaxDelay: 200 * time.Millisecond}}))
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { conn.Close() })
	s.client = lifecyclev1.NewLifecycleServiceClient(conn)
	pool, err := pgstore.Connect(context.Background(), config.Postgres{URL: pgURL, MaxConns: 2})
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(pool.Close)
	s.pool = pool
	w.waitFor("lifecycle serving", func() bool {
		select {
		case err := <-s.done:
			w.t.Fatalf("lifecycle.Run: %v", err)
		default:
		}
		_, err := s.client.GetStats(s.ctx(), &lifecyclev1.GetStatsRequest{})
		return err == nil
	})
	return s
}

// stop shuts the service down gracefully (idempotent).
func (s *svc) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	if err := <-s.done; err != nil {
		s.w.t.Errorf("lifecycle.Run: %v", err)
	}
}

func (s *svc) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+s.key)
}

func (w *world) waitFor(what string, cond func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// publish appends a client fact the way ingest does.
func (w *world) publish(tenant, conv string, at time.Time, payload any) *eventv1.Envelope {
	w.t.Helper()
	env := envelope(tenant, conv, at, payload)
	if _, err := w.bus.Publish(context.Background(), env); err != nil {
		w.t.Fatal(err)
	}
	return env
}

func (w *world) publishEnv(env *eventv1.Envelope) {
	w.t.Helper()
	if _, err := w.bus.Publish(context.Background(), proto.Clone(env).(*eventv1.Envelope)); err != nil {
		w.t.Fatal(err)
	}
}

func envelope(tenant, conv string, at time.Time, payload any) *eventv1.Envelope {
	env := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: tenant, ConversationId: conv, OccurredAt: timestamppb.New(at)}
	switch p := payload.(type) {
	case *eventv1.ConversationStarted:
		env.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: p}
	case *eventv1.MessagePosted:
		env.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: p}
	case *eventv1.GoalReached:
		env.Payload = &eventv1.Envelope_GoalReached{GoalReached: p}
	case *eventv1.FlowCompleted:
		env.Payload = &eventv1.Envelope_FlowCompleted{FlowCompleted: p}
	case *eventv1.HandoffRequested:
		env.Payload = &eventv1.Envelope_HandoffRequested{HandoffRequested: p}
	case *eventv1.AgentJoined:
		env.Payload = &eventv1.Envelope_AgentJoined{AgentJoined: p}
	case *eventv1.ConversationClosed:
		env.Payload = &eventv1.Envelope_ConversationClosed{ConversationClosed: p}
	case *eventv1.TagApplied:
		env.Producer = "tagging"
		env.Payload = &eventv1.Envelope_TagApplied{TagApplied: p}
	case *eventv1.ConversationEnded:
		env.Producer = "lifecycle"
		env.Payload = &eventv1.Envelope_ConversationEnded{ConversationEnded: p}
	default:
		panic(fmt.Sprintf("unsupported payload %T", payload))
	}
	return env
}

func visitorMsg(text string) *eventv1.MessagePosted {
	return &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text}
}

func started(ch eventv1.Channel) *eventv1.ConversationStarted {
	return &eventv1.ConversationStarted{BotId: "support", Channel: ch}
}

func closedBy(a eventv1.Actor) *eventv1.ConversationClosed {
	return &eventv1.ConversationClosed{ClosedBy: a}
}

// events returns the envelopes stored on one conversation's kind subject.
func (w *world) events(tenant, conv, kind string) []*eventv1.Envelope {
	w.t.Helper()
	ctx := context.Background()
	st, err := w.bus.JetStream().Stream(ctx, eventbus.ConvStream)
	if err != nil {
		w.t.Fatal(err)
	}
	var out []*eventv1.Envelope
	subject := eventbus.ConvSubject(tenant, conv, kind)
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			w.t.Fatal(err)
		}
		env := &eventv1.Envelope{}
		if err := proto.Unmarshal(m.Data, env); err != nil {
			w.t.Fatal(err)
		}
		out = append(out, env)
		seq = m.Sequence + 1
	}
}

func (w *world) count(tenant, conv, kind string) int { return len(w.events(tenant, conv, kind)) }

func (w *world) lastSeq() uint64 {
	w.t.Helper()
	st, err := w.bus.JetStream().Stream(context.Background(), eventbus.ConvStream)
	if err != nil {
		w.t.Fatal(err)
	}
	return st.CachedInfo().State.LastSeq
}

// quiet waits until the service has applied the whole stream (its own
// derived events included) and published everything in its outbox.
func (s *svc) quiet() {
	s.w.t.Helper()
	ctx := context.Background()
	s.w.waitFor("lifecycle to catch up", func() bool {
		var outbox int64
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM lifecycle_outbox`).Scan(&outbox); err != nil {
			return false
		}
		return outbox == 0 && minPosition(ctx, s.pool) == s.w.lastSeq()
	})
}

// minPosition is the lowest committed position of lifecycle's partitions.
func minPosition(ctx context.Context, pool *pgxpool.Pool) uint64 {
	pos, err := partition.Positions(ctx, pool, consumer.Durable, partition.DefaultPartitions)
	if err != nil {
		return 0
	}
	return slices.Min(pos)
}

func (s *svc) state(conv string) *lifecyclev1.ConversationState {
	s.w.t.Helper()
	st, err := s.client.GetConversationState(s.ctx(), &lifecyclev1.GetConversationStateRequest{ConversationId: conv})
	if err != nil {
		s.w.t.Fatalf("state of %s: %v", conv, err)
	}
	return st
}

func (s *svc) waitState(conv, what string, cond func(*lifecyclev1.ConversationState) bool) *lifecyclev1.ConversationState {
	s.w.t.Helper()
	var st *lifecyclev1.ConversationState
	s.w.waitFor(conv+" "+what, func() bool {
		var err error
		st, err = s.client.GetConversationState(s.ctx(), &lifecyclev1.GetConversationStateRequest{ConversationId: conv})
		return err == nil && cond(st)
	})
	return st
}

func ended(st *lifecyclev1.ConversationState) bool {
	return st.Status == lifecyclev1.Status_STATUS_ENDED
}

// rows returns every conversation's state columns as JSON, in key order.
func rows(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	r, err := pool.Query(context.Background(), `SELECT row_to_json(c)::text FROM (SELECT `+strings.Join(store.StateColumns(), ", ")+
		` FROM lifecycle_conversations ORDER BY tenant_id, conversation_id) c`)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []string
	for r.Next() {
		var s string
		if err := r.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func assertCode(t *testing.T, err error, code codes.Code, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("want %v, got %v", code, err)
	}
	if field == "" {
		return
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) == 1 && br.FieldViolations[0].Field == field {
			return
		}
	}
	t.Fatalf("want a field violation on %s, got %v", field, st.Details())
}

func TestCloseEndsOnceAndUpdatesTheView(t *testing.T) {
	w := newWorld(t, time.Minute)
	s := w.start(w.pgURL, w.key, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	kv, err := convview.Ensure(ctx, w.bus, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	view, err := convview.Watch(ctx, kv, 0, nil)
	if err != nil {
		t.Fatal(err)
	}

	now := w.clock.Now()
	w.publish("acme", "c1", now.Add(-3*time.Minute), started(eventv1.Channel_CHANNEL_WEB_WIDGET))
	w.publish("acme", "c1", now.Add(-2*time.Minute), visitorMsg("Where is my order?"))
	w.publish("acme", "c1", now.Add(-90*time.Second), &eventv1.GoalReached{GoalId: "order-status"})
	closeEv := w.publish("acme", "c1", now.Add(-time.Minute), closedBy(eventv1.Actor_ACTOR_VISITOR))

	w.waitFor("conversation_ended and engagement_classified", func() bool {
		return w.count("acme", "c1", "conversation_ended") == 1 && w.count("acme", "c1", "engagement_classified") == 1
	})
	w.waitFor("the ended view", func() bool { _, ok := view.Ended("acme", "c1"); return ok })
	got, _ := view.Ended("acme", "c1")
	if got.Reason != eventv1.EndReason_END_REASON_VISITOR_CLOSED || !got.EndedAt.Equal(now.Add(-time.Minute)) {
		t.Fatalf("view entry %+v", got)
	}
	e := w.events("acme", "c1", "conversation_ended")[0]
	if e.EventId != machine.EndedEventID("acme", "c1") || e.Producer != "lifecycle" || e.CausationId != closeEv.EventId ||
		e.GetConversationEnded().Reason != eventv1.EndReason_END_REASON_VISITOR_CLOSED ||
		!e.GetConversationEnded().LastActivityAt.AsTime().Equal(now.Add(-time.Minute)) || !e.OccurredAt.AsTime().Equal(now.Add(-time.Minute)) {
		t.Fatalf("conversation_ended %v", e)
	}
	c := w.events("acme", "c1", "engagement_classified")[0].GetEngagementClassified()
	if c.Engagement != eventv1.Engagement_ENGAGEMENT_GOAL_COMPLETED || !c.Resolved || c.VisitorMessages != 1 || c.GoalsReached != 1 {
		t.Fatalf("engagement_classified %v", c)
	}
	all := w.events("acme", "c1", "*")
	if k := eventbus.Kind(all[len(all)-2]); k != "conversation_ended" {
		t.Fatalf("ended must come before classified, got %s", k)
	}

	// The same close again: a retry with the same id is dropped by
	// JetStream; one with a new id is a late event. Neither ends it again.
	w.publishEnv(closeEv)
	again := w.publish("acme", "c1", now, closedBy(eventv1.Actor_ACTOR_VISITOR))
	w.waitFor("late_event_recorded", func() bool { return w.count("acme", "c1", "late_event_recorded") == 1 })
	s.quiet()
	if n := w.count("acme", "c1", "conversation_ended"); n != 1 {
		t.Fatalf("%d conversation_ended", n)
	}
	ler := w.events("acme", "c1", "late_event_recorded")[0]
	if ler.GetLateEventRecorded().LateEventId != again.EventId || ler.EventId != machine.LateEventID("acme", again.EventId) {
		t.Fatalf("late_event_recorded %v", ler)
	}
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `parley_lifecycle_conversations_ended_total{`) || !strings.Contains(string(metrics), `reason="END_REASON_VISITOR_CLOSED"`) {
		t.Fatalf("no conversations-ended metric in:\n%s", metrics)
	}
	st := s.state("c1")
	if !ended(st) || st.EndReason != eventv1.EndReason_END_REASON_VISITOR_CLOSED || st.LateEvents != 1 || st.Engagement != eventv1.Engagement_ENGAGEMENT_GOAL_COMPLETED ||
		!st.Resolved || st.Channel != eventv1.Channel_CHANNEL_WEB_WIDGET || st.BotId != "support" || st.VisitorMessages != 1 {
		t.Fatalf("state %v", st)
	}
}

func TestLateEvents(t *testing.T) {
	w := newWorld(t, time.Minute)
	s := w.start(w.pgURL, w.key, nil)
	now := w.clock.Now()
	w.publish("acme", "c1", now.Add(-time.Hour), visitorMsg("hi"))
	w.publish("acme", "c1", now.Add(-50*time.Minute), closedBy(eventv1.Actor_ACTOR_BOT))
	s.waitState("c1", "ended", ended)
	late := w.publish("acme", "c1", now, visitorMsg("are you there?"))
	w.publish("acme", "c1", now, &eventv1.TagApplied{Tag: "abandoned"}) // tagging reacting to the end: not late
	w.waitFor("late_event_recorded", func() bool { return w.count("acme", "c1", "late_event_recorded") == 1 })
	s.quiet()
	if n := w.count("acme", "c1", "late_event_recorded"); n != 1 {
		t.Fatalf("%d late_event_recorded, want 1 (tag_applied is not late)", n)
	}
	p := w.events("acme", "c1", "late_event_recorded")[0].GetLateEventRecorded()
	if p.LateEventId != late.EventId || p.LateEventKind != "message_posted" || !p.EndedAt.AsTime().Equal(now.Add(-50*time.Minute)) {
		t.Fatalf("late_event_recorded %v", p)
	}
	st := s.state("c1")
	if !ended(st) || st.EndReason != eventv1.EndReason_END_REASON_BOT_COMPLETED || st.VisitorMessages != 1 || st.LateEvents != 1 ||
		!st.LastActivityAt.AsTime().Equal(now.Add(-50*time.Minute)) {
		t.Fatalf("a late event changed the state: %v", st)
	}
}

func TestStaleSweepWithTimeouts(t *testing.T) {
	w := newWorld(t, time.Minute)
	s := w.start(w.pgURL, w.key, func(c *lifecycle.Config) {
		c.ChannelTimeouts = map[string]time.Duration{"sms": 10 * time.Minute}
	})
	if _, err := s.client.SetSessionTimeout(s.ctx(), &lifecyclev1.SetSessionTimeoutRequest{Channel: eventv1.Channel_CHANNEL_WHATSAPP, TimeoutSeconds: 3600}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.SetSessionTimeout(s.ctx(), &lifecyclev1.SetSessionTimeoutRequest{TimeoutSeconds: 90 * 60}); err != nil { // acme, every other channel
		t.Fatal(err)
	}
	_, err := s.client.SetSessionTimeout(s.ctx(), &lifecyclev1.SetSessionTimeoutRequest{Channel: 99, TimeoutSeconds: 60})
	assertCode(t, err, codes.InvalidArgument, "channel")
	list, err := s.client.ListSessionTimeouts(s.ctx(), &lifecyclev1.ListSessionTimeoutsRequest{})
	if err != nil || len(list.Timeouts) != 2 || len(list.ChannelDefaults) != 1 || list.DefaultTimeoutSeconds != 24*3600 {
		t.Fatalf("list: %v %v", list, err)
	}

	t0 := w.clock.Now()
	convs := []struct {
		tenant, conv string
		ch           eventv1.Channel
	}{
		{"acme", "wa", eventv1.Channel_CHANNEL_WHATSAPP},          // 1h (acme, WhatsApp)
		{"acme", "tg", eventv1.Channel_CHANNEL_TELEGRAM},          // 90m (acme, every channel)
		{"globex", "sms", eventv1.Channel_CHANNEL_SMS},            // 10m (service default for SMS)
		{"globex", "web", eventv1.Channel_CHANNEL_WEB_WIDGET},     // 24h (service default)
		{"acme", "busy", eventv1.Channel_CHANNEL_WHATSAPP},        // keeps talking
		{"globex", "nochan", eventv1.Channel_CHANNEL_UNSPECIFIED}, // 24h
	}
	for _, c := range convs {
		w.publish(c.tenant, c.conv, t0, started(c.ch))
		w.publish(c.tenant, c.conv, t0.Add(time.Second), visitorMsg("hello"))
	}
	s.quiet()

	endedStale := func(tenant, conv string) bool { return w.count(tenant, conv, "conversation_ended") == 1 }
	w.clock.Advance(30 * time.Minute) // t0+30m
	w.publish("acme", "busy", w.clock.Now(), visitorMsg("still here"))
	s.waitState("busy", "activity applied", func(st *lifecyclev1.ConversationState) bool {
		return st.LastActivityAt.AsTime().Equal(w.clock.Now())
	})
	w.waitFor("sms to end after 10m", func() bool { return endedStale("globex", "sms") })

	w.clock.Advance(40 * time.Minute) // t0+70m
	w.waitFor("wa to end after 1h", func() bool { return endedStale("acme", "wa") })
	s.quiet()
	if endedStale("acme", "tg") || endedStale("acme", "busy") {
		t.Fatal("ended a conversation before its timeout")
	}
	e := w.events("acme", "wa", "conversation_ended")[0]
	if e.GetConversationEnded().Reason != eventv1.EndReason_END_REASON_STALE_TIMEOUT || e.CausationId != "" ||
		!e.GetConversationEnded().LastActivityAt.AsTime().Equal(t0.Add(time.Second)) || !e.OccurredAt.AsTime().Equal(w.clock.Now()) {
		t.Fatalf("stale conversation_ended %v", e)
	}
	if c := w.events("acme", "wa", "engagement_classified")[0].GetEngagementClassified(); c.Engagement != eventv1.Engagement_ENGAGEMENT_ENGAGED || c.Resolved {
		t.Fatalf("engagement %v", c)
	}

	w.clock.Advance(25 * time.Minute) // t0+95m
	w.waitFor("tg (90m) and busy (1h after its last message) to end", func() bool { return endedStale("acme", "tg") && endedStale("acme", "busy") })
	s.quiet()
	if endedStale("globex", "web") || endedStale("globex", "nochan") {
		t.Fatal("ended a conversation before its timeout")
	}

	w.clock.Advance(23 * time.Hour) // t0+24h35m
	w.waitFor("the 24h conversations to end", func() bool { return endedStale("globex", "web") && endedStale("globex", "nochan") })
	s.quiet()
	for _, c := range convs {
		if n := w.count(c.tenant, c.conv, "conversation_ended"); n != 1 {
			t.Fatalf("%s/%s: %d conversation_ended", c.tenant, c.conv, n)
		}
	}
	st := s.state("wa")
	if !ended(st) || st.EndReason != eventv1.EndReason_END_REASON_STALE_TIMEOUT || !st.EndedAt.AsTime().Equal(t0.Add(70*time.Minute)) {
		t.Fatalf("state %v", st)
	}
}

func TestEndStaleEndConversationAndStats(t *testing.T) {
	w := newWorld(t, time.Minute)
	s := w.start(w.pgURL, w.key, func(c *lifecycle.Config) { c.SessionTimeout = 1000 * time.Hour })
	now := w.clock.Now()
	// Idle since then by the client's clock and by ingest's.
	for conv, idle := range map[string]time.Duration{"a": 50 * time.Hour, "b": 30 * time.Hour, "c": time.Hour, "d": 2 * time.Hour} {
		w.publishRecorded("acme", conv, now.Add(-idle-time.Minute), now.Add(-idle-time.Minute), started(eventv1.Channel_CHANNEL_WHATSAPP))
		w.publishRecorded("acme", conv, now.Add(-idle), now.Add(-idle), visitorMsg("hi"))
	}
	w.publish("acme", "e", now.Add(-20*time.Minute), started(eventv1.Channel_CHANNEL_WEB_WIDGET))
	w.publish("acme", "e", now, &eventv1.HandoffRequested{})
	w.publishRecorded("globex", "x", now.Add(-100*time.Hour), now.Add(-100*time.Hour), visitorMsg("other tenant"))
	s.quiet()

	_, err := s.client.EndStale(s.ctx(), &lifecyclev1.EndStaleRequest{})
	assertCode(t, err, codes.InvalidArgument, "idle_hours")
	res, err := s.client.EndStale(s.ctx(), &lifecyclev1.EndStaleRequest{IdleHours: 48})
	if err != nil || res.Ended != 1 {
		t.Fatalf("end-stale 48h: %v %v", res, err)
	}
	res, err = s.client.EndStale(s.ctx(), &lifecyclev1.EndStaleRequest{IdleHours: 24})
	if err != nil || res.Ended != 1 {
		t.Fatalf("end-stale 24h: %v %v", res, err)
	}
	s.quiet()
	if !ended(s.state("a")) || !ended(s.state("b")) || ended(s.state("c")) {
		t.Fatal("wrong conversations ended")
	}
	if w.count("globex", "x", "conversation_ended") != 0 {
		t.Fatal("EndStale ended another tenant's conversation")
	}

	// EndConversation: validation, unknown, success, already ended.
	_, err = s.client.EndConversation(s.ctx(), &lifecyclev1.EndConversationRequest{})
	assertCode(t, err, codes.InvalidArgument, "conversation_id")
	_, err = s.client.EndConversation(s.ctx(), &lifecyclev1.EndConversationRequest{ConversationId: "nope"})
	assertCode(t, err, codes.NotFound, "")
	_, err = s.client.EndConversation(s.ctx(), &lifecyclev1.EndConversationRequest{ConversationId: "x"}) // globex's
	assertCode(t, err, codes.NotFound, "")
	// The actor is the caller's key, whatever the request claims.
	st, err := s.client.EndConversation(s.ctx(), &lifecyclev1.EndConversationRequest{ConversationId: "c", Note: "spam", EndedBy: "mallory"})
	if err != nil || !ended(st) || st.EndReason != eventv1.EndReason_END_REASON_ADMINISTRATOR || st.EndedBy != "api-key:"+w.keyID {
		t.Fatalf("end: %v %v", st, err)
	}
	_, err = s.client.EndConversation(s.ctx(), &lifecyclev1.EndConversationRequest{ConversationId: "c"})
	assertCode(t, err, codes.FailedPrecondition, "")
	w.waitFor("administrator's conversation_ended", func() bool { return w.count("acme", "c", "conversation_ended") == 1 })
	if e := w.events("acme", "c", "conversation_ended")[0].GetConversationEnded(); e.Reason != eventv1.EndReason_END_REASON_ADMINISTRATOR || e.EndedBy != "api-key:"+w.keyID {
		t.Fatalf("ended %v", e)
	}
	_, err = s.client.GetConversationState(s.ctx(), &lifecyclev1.GetConversationStateRequest{ConversationId: "bad id!"})
	assertCode(t, err, codes.InvalidArgument, "conversation_id")
	s.quiet()

	stats, err := s.client.GetStats(s.ctx(), &lifecyclev1.GetStatsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Active != 2 || stats.Ended != 3 || stats.EndedByReason["END_REASON_STALE_TIMEOUT"] != 2 || stats.EndedByReason["END_REASON_ADMINISTRATOR"] != 1 ||
		stats.ActiveByChannel["CHANNEL_WHATSAPP"] != 1 || stats.ActiveByChannel["CHANNEL_WEB_WIDGET"] != 1 || stats.WaitingForAgent != 1 ||
		!stats.OldestActiveAt.AsTime().Equal(now.Add(-2*time.Hour-time.Minute)) || !stats.LongestIdleSince.AsTime().Equal(now.Add(-2*time.Hour)) {
		t.Fatalf("stats %v", stats)
	}
}

func TestTakeoverAndNoResponse(t *testing.T) {
	w := newWorld(t, time.Minute)
	s := w.start(w.pgURL, w.key, nil)
	now := w.clock.Now()
	w.publish("acme", "lonely", now, visitorMsg("human please"))
	w.publish("acme", "served", now, visitorMsg("human please"))
	s.quiet()

	_, err := s.client.RequestHandoff(s.ctx(), &lifecyclev1.RequestHandoffRequest{ConversationId: "unknown"})
	assertCode(t, err, codes.NotFound, "")
	st, err := s.client.RequestHandoff(s.ctx(), &lifecyclev1.RequestHandoffRequest{ConversationId: "lonely", Reason: "asked", RequestId: "h1"})
	if err != nil || !st.WaitingForAgent || !st.HandoffRequested || !st.HandoffRequestedAt.AsTime().Equal(now) {
		t.Fatalf("handoff: %v %v", st, err)
	}
	if _, err := s.client.RequestHandoff(s.ctx(), &lifecyclev1.RequestHandoffRequest{ConversationId: "lonely", RequestId: "h1"}); err != nil {
		t.Fatal(err)
	}
	if n := w.count("acme", "lonely", "handoff_requested"); n != 1 {
		t.Fatalf("a retried request appended %d handoff_requested", n)
	}
	if _, err := s.client.RequestHandoff(s.ctx(), &lifecyclev1.RequestHandoffRequest{ConversationId: "served"}); err != nil {
		t.Fatal(err)
	}

	w.clock.Advance(time.Minute)
	_, err = s.client.JoinAgent(s.ctx(), &lifecyclev1.JoinAgentRequest{ConversationId: "served"})
	assertCode(t, err, codes.InvalidArgument, "agent_id")
	st, err = s.client.JoinAgent(s.ctx(), &lifecyclev1.JoinAgentRequest{ConversationId: "served", AgentId: "ann", AgentName: "Ann"})
	if err != nil || !st.Takeover || st.AgentId != "ann" || st.AgentName != "Ann" || st.WaitingForAgent || !st.TakeoverAt.AsTime().Equal(w.clock.Now()) {
		t.Fatalf("join: %v %v", st, err)
	}
	w.clock.Advance(10 * time.Second)
	w.publish("acme", "served", w.clock.Now(), visitorMsg("are you there?"))
	w.clock.Advance(20 * time.Second)
	w.publish("acme", "served", w.clock.Now(), &eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, Text: "Ann here", AgentId: "ann"})
	st = s.waitState("served", "first response", func(st *lifecyclev1.ConversationState) bool { return st.FirstResponseMs != nil })
	if st.GetFirstResponseMs() != 90_000 || st.AgentReplies != 1 || st.AvgResponseMs != 20_000 {
		t.Fatalf("response times: %v", st)
	}
	_, err = s.client.LeaveAgent(s.ctx(), &lifecyclev1.LeaveAgentRequest{ConversationId: "served", AgentId: "bob"})
	assertCode(t, err, codes.FailedPrecondition, "")

	// Five minutes after the request, only the unanswered one is reported.
	w.clock.Advance(3*time.Minute + 30*time.Second)
	w.waitFor("operator_no_response", func() bool { return w.count("acme", "lonely", "operator_no_response") == 1 })
	s.quiet()
	st = s.state("lonely")
	if !st.OperatorNoResponse || st.WaitingForAgent || st.Takeover {
		t.Fatalf("lonely: %v", st)
	}
	onr := w.events("acme", "lonely", "operator_no_response")[0]
	if p := onr.GetOperatorNoResponse(); p.WaitedSeconds != 300 || !p.HandoffRequestedAt.AsTime().Equal(now) || onr.CausationId != eventbus.ClientEventID("acme", "lonely", "h1") {
		t.Fatalf("operator_no_response %v", onr)
	}
	w.clock.Advance(time.Hour)
	st, err = s.client.LeaveAgent(s.ctx(), &lifecyclev1.LeaveAgentRequest{ConversationId: "served", AgentId: "ann"})
	if err != nil || !st.AgentLeftAt.AsTime().Equal(w.clock.Now()) || st.AgentId != "ann" {
		t.Fatalf("leave: %v %v", st, err)
	}
	s.quiet()
	if w.count("acme", "served", "operator_no_response") != 0 || w.count("acme", "lonely", "operator_no_response") != 1 {
		t.Fatal("operator_no_response for an answered request, or twice")
	}
	if st := s.state("served"); st.OperatorNoResponse || !st.Takeover {
		t.Fatalf("served: %v", st)
	}
	// Handoff on an ended conversation.
	w.publish("acme", "served", w.clock.Now(), closedBy(eventv1.Actor_ACTOR_AGENT))
	s.waitState("served", "ended", ended)
	_, err = s.client.RequestHandoff(s.ctx(), &lifecyclev1.RequestHandoffRequest{ConversationId: "served"})
	assertCode(t, err, codes.FailedPrecondition, "")
	if st := s.state("served"); st.EndReason != eventv1.EndReason_END_REASON_AGENT_CLOSED || st.EndedBy != "ann" || !st.Resolved {
		t.Fatalf("agent close: %v", st)
	}
}

func TestRestartMidStream(t *testing.T) {
	w := newWorld(t, time.Minute)
	s := w.start(w.pgURL, w.key, nil)
	now := w.clock.Now()
	const convs = 40
	for i := range convs {
		conv := fmt.Sprintf("r%02d", i)
		w.publish("acme", conv, now.Add(-time.Hour), started(eventv1.Channel_CHANNEL_WEB_WIDGET))
		for j := range 10 {
			w.publish("acme", conv, now.Add(-time.Hour+time.Duration(j)*time.Second), visitorMsg("x"))
		}
	}
	for i := range convs / 2 {
		w.publish("acme", fmt.Sprintf("r%02d", i), now.Add(-30*time.Minute), closedBy(eventv1.Actor_ACTOR_VISITOR))
	}
	// Stop while the consumer is most likely still working through the
	// stream; it finishes and acknowledges the batch in hand.
	s.stop()
	for i := range convs {
		conv := fmt.Sprintf("r%02d", i)
		w.publish("acme", conv, now.Add(-20*time.Minute), visitorMsg("after the restart"))
		if i >= convs/2 {
			w.publish("acme", conv, now.Add(-10*time.Minute), closedBy(eventv1.Actor_ACTOR_BOT))
		}
	}
	s = w.start(w.pgURL, w.key, nil)
	s.quiet()
	for i := range convs {
		conv := fmt.Sprintf("r%02d", i)
		st := s.state(conv)
		if n := w.count("acme", conv, "conversation_ended"); n != 1 || !ended(st) {
			t.Fatalf("%s: %d conversation_ended, state %v", conv, n, st)
		}
		if n := w.count("acme", conv, "engagement_classified"); n != 1 {
			t.Fatalf("%s: %d engagement_classified", conv, n)
		}
		wantReason, wantLate, wantMsgs := eventv1.EndReason_END_REASON_VISITOR_CLOSED, uint32(1), uint32(10)
		if i >= convs/2 {
			wantReason, wantLate, wantMsgs = eventv1.EndReason_END_REASON_BOT_COMPLETED, 0, 11
		}
		if st.EndReason != wantReason || st.LateEvents != wantLate || st.VisitorMessages != wantMsgs || int(w.count("acme", conv, "late_event_recorded")) != int(wantLate) {
			t.Fatalf("%s: %v", conv, st)
		}
	}
}

func TestRebuildFromReplay(t *testing.T) {
	// A short duplicate window, so that the replay happens after JetStream
	// has forgotten the ids: lifecycle itself must not append again.
	w := newWorld(t, time.Second)
	now := w.clock.Now()
	// The log already ends "logged" when its close arrives (a sweep won the
	// race; published before lifecycle runs so the order is certain): the
	// logged end decides, live and on replay.
	w.publish("acme", "logged", now.Add(-2*time.Minute), visitorMsg("hi"))
	w.publish("acme", "logged", now.Add(-time.Minute), closedBy(eventv1.Actor_ACTOR_VISITOR))
	w.publishEnv(&eventv1.Envelope{
		EventId: machine.EndedEventID("acme", "logged"), TenantId: "acme", ConversationId: "logged", Producer: "lifecycle",
		OccurredAt: timestamppb.New(now.Add(-90 * time.Second)),
		Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{
			Reason: eventv1.EndReason_END_REASON_STALE_TIMEOUT, LastActivityAt: timestamppb.New(now.Add(-2 * time.Minute)),
		}},
	})
	s := w.start(w.pgURL, w.key, func(c *lifecycle.Config) { c.ChannelTimeouts = map[string]time.Duration{"whatsapp": time.Hour} })
	// Closed, with a late event and a tag.
	w.publish("acme", "closed", now.Add(-time.Hour), started(eventv1.Channel_CHANNEL_WEB_WIDGET))
	w.publish("acme", "closed", now.Add(-59*time.Minute), visitorMsg("hi"))
	w.publish("acme", "closed", now.Add(-58*time.Minute), &eventv1.FlowCompleted{FlowId: "f"})
	w.publish("acme", "closed", now.Add(-57*time.Minute), closedBy(eventv1.Actor_ACTOR_VISITOR))
	s.waitState("closed", "ended", ended)
	w.publish("acme", "closed", now.Add(-56*time.Minute), visitorMsg("late"))
	w.publish("acme", "closed", now.Add(-56*time.Minute), &eventv1.TagApplied{Tag: "t"})
	// Ended by the sweeper (stale), by an administrator, and with no response.
	w.publish("acme", "stale", now.Add(-30*time.Minute), started(eventv1.Channel_CHANNEL_WHATSAPP))
	w.publish("acme", "admin", now.Add(-30*time.Minute), visitorMsg("spam"))
	w.publish("acme", "handoff", now.Add(-time.Minute), visitorMsg("human"))
	w.publish("acme", "handoff", now.Add(-time.Minute), &eventv1.HandoffRequested{})
	w.publish("acme", "served", now.Add(-time.Minute), &eventv1.HandoffRequested{})
	w.publish("acme", "served", now, &eventv1.AgentJoined{AgentId: "ann"})
	w.publish("acme", "served", now.Add(time.Second), &eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT})
	s.quiet()
	if _, err := s.client.EndConversation(s.ctx(), &lifecyclev1.EndConversationRequest{ConversationId: "admin", EndedBy: "root"}); err != nil {
		t.Fatal(err)
	}
	w.clock.Advance(61 * time.Minute)
	w.waitFor("sweeps", func() bool {
		return w.count("acme", "stale", "conversation_ended") == 1 && w.count("acme", "handoff", "operator_no_response") == 1
	})
	w.publish("acme", "stale", w.clock.Now(), visitorMsg("late for stale"))
	w.publish("acme", "served", w.clock.Now(), visitorMsg("still talking"))
	s.quiet()
	if st := s.state("logged"); st.EndReason != eventv1.EndReason_END_REASON_STALE_TIMEOUT || st.VisitorMessages != 1 || st.LateEvents != 0 {
		t.Fatalf("logged: %v", st)
	}
	if w.count("acme", "logged", "conversation_ended") != 1 || w.count("acme", "logged", "engagement_classified") != 0 {
		t.Fatal("the close of a conversation the log had already ended derived events")
	}
	live := rows(t, s.pool)
	s.stop()
	before := w.lastSeq()
	time.Sleep(1100 * time.Millisecond) // outlive the duplicate window

	// A new, empty database: the consumer starts over and rebuilds.
	emptyURL := testenv.Postgres(t)
	key, _ := w.createKey(emptyURL)
	s2 := w.start(emptyURL, key, func(c *lifecycle.Config) { c.ChannelTimeouts = map[string]time.Duration{"whatsapp": time.Hour} })
	s2.quiet()
	rebuilt := rows(t, s2.pool)
	if !slices.Equal(live, rebuilt) {
		t.Fatalf("rebuilt state differs:\nlive:\n%s\nrebuilt:\n%s", strings.Join(live, "\n"), strings.Join(rebuilt, "\n"))
	}
	if len(live) != 6 {
		t.Fatalf("%d conversations", len(live))
	}
	if after := w.lastSeq(); after != before {
		t.Fatalf("the replay appended %d events", after-before)
	}
	for _, conv := range []string{"closed", "stale", "admin"} {
		if n := w.count("acme", conv, "conversation_ended"); n != 1 {
			t.Fatalf("%s: %d conversation_ended", conv, n)
		}
	}
	// A close appended after the rebuild started is applied without
	// looking the log up (only lifecycle appends ends, and this instance
	// has recorded every one it appended since): it ends the conversation
	// once.
	w.publish("acme", "served", w.clock.Now(), closedBy(eventv1.Actor_ACTOR_AGENT))
	s2.waitState("served", "ended", ended)
	s2.quiet()
	if st := s2.state("served"); st.EndReason != eventv1.EndReason_END_REASON_AGENT_CLOSED || st.EndedBy != "ann" {
		t.Fatalf("served: %v", st)
	}
	if n := w.count("acme", "served", "conversation_ended"); n != 1 {
		t.Fatalf("served: %d conversation_ended", n)
	}
	before = w.lastSeq()
	// Restarting on the rebuilt database resumes instead of replaying.
	s2.stop()
	w.publish("acme", "fresh", w.clock.Now(), visitorMsg("new"))
	s3 := w.start(emptyURL, key, nil)
	s3.quiet()
	if st := s3.state("fresh"); st.Status != lifecyclev1.Status_STATUS_ACTIVE || st.AppliedSequence != before+1 {
		t.Fatalf("fresh: %v", st)
	}
}

// TestStopPublishesWhatWasApplied stops the service as soon as it has
// applied a burst of closes: what they derived is published before Run
// returns, not left in the outbox until the next start.
func TestStopPublishesWhatWasApplied(t *testing.T) {
	w := newWorld(t, time.Minute)
	s := w.start(w.pgURL, w.key, nil)
	now := w.clock.Now()
	const convs = 200
	for i := range convs {
		conv := fmt.Sprintf("s%03d", i)
		w.publish("acme", conv, now.Add(-time.Minute), visitorMsg("hi"))
		w.publish("acme", conv, now, closedBy(eventv1.Actor_ACTOR_VISITOR))
	}
	last := w.lastSeq()
	w.waitFor("the closes to be applied", func() bool { return minPosition(context.Background(), s.pool) >= last })
	s.stop()
	var left int
	if err := s.pool.QueryRow(context.Background(), `SELECT count(*) FROM lifecycle_outbox`).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Fatalf("%d outbox rows left after stopping", left)
	}
	for i := range convs {
		conv := fmt.Sprintf("s%03d", i)
		if n := w.count("acme", conv, "conversation_ended"); n != 1 {
			t.Fatalf("%s: %d conversation_ended", conv, n)
		}
	}
}

// Of two replicas, one applies the log; the other serves the API (reading
// what the first one applied) and takes over when the first one stops.
// Every conversation is ended exactly once throughout.
func TestTwoReplicasOneConsumes(t *testing.T) {
	w := newWorld(t, time.Minute)
	a := w.start(w.pgURL, w.key, nil)
	b := w.start(w.pgURL, w.key, nil)
	now := w.clock.Now()
	conv := func(id string) {
		w.publish("acme", id, now.Add(-3*time.Minute), started(eventv1.Channel_CHANNEL_WEB_WIDGET))
		for i := range 5 {
			w.publish("acme", id, now.Add(-2*time.Minute+time.Duration(i)*time.Second), visitorMsg(fmt.Sprintf("message %d", i)))
		}
		w.publish("acme", id, now.Add(-time.Minute), closedBy(eventv1.Actor_ACTOR_VISITOR))
	}
	for i := range 20 {
		conv(fmt.Sprintf("r%02d", i))
	}
	for _, s := range []*svc{a, b} {
		st := s.waitState("r19", "ended on both replicas' API", ended)
		if st.VisitorMessages != 5 {
			t.Fatalf("state %v", st)
		}
	}
	// Whichever leads stops; the other takes over.
	a.stop()
	for i := 20; i < 30; i++ {
		conv(fmt.Sprintf("r%02d", i))
	}
	if st := b.waitState("r29", "ended after the takeover", ended); st.VisitorMessages != 5 {
		t.Fatalf("state %v", st)
	}
	b.quiet()
	for i := range 30 {
		id := fmt.Sprintf("r%02d", i)
		if n := w.count("acme", id, "conversation_ended"); n != 1 {
			t.Fatalf("%s: %d conversation_ended", id, n)
		}
		if n := w.count("acme", id, "late_event_recorded"); n != 0 {
			t.Fatalf("%s: %d late events (events applied out of order)", id, n)
		}
	}
}
