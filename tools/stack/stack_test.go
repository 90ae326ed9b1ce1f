package stack

import (
	"context"
	"net/http"
	"net/smtp"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/localinfra/mailcatcher"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	lifecyclev1 "github.com/parley-dev/parley/proto/parley/lifecycle/v1"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestWalkingSkeleton starts the whole local stack (embedded NATS, private
// PostgreSQL and ClickHouse, five services) in a temp dir, posts a message
// through ingest and reads it back from reporting.
func TestWalkingSkeleton(t *testing.T) {
	dir := stackDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// Two replicas of every service; lifecycle's divide the event log's partitions.
	st, err := Start(ctx, Options{Dir: dir, FreePorts: true, DemoTenant: "demo", LogOutput: testLog{t}, LogLevel: "info", Replicas: 2})
	if err != nil {
		t.Fatalf("start stack: %v", err)
	}
	defer st.Stop()
	waitOwners(t, ctx, st, "lifecycle", "lifecycle-1")

	// The mail catcher keeps what is sent to it in <dir>/mail.
	if st.MailDir != filepath.Join(st.Dir, "mail") {
		t.Errorf("mail dir %s", st.MailDir)
	}
	if err := smtp.SendMail(st.SMTPAddr, nil, "parley@localhost", []string{"visitor@example.com"},
		[]byte("Subject: stack mail\r\n\r\nhello\r\n")); err != nil {
		t.Fatalf("send to the catcher: %v", err)
	}
	if caught, err := (&mailcatcher.Store{Dir: st.MailDir}).List(); err != nil || len(caught) != 1 || caught[0].Header("Subject") != "stack mail" {
		t.Fatalf("caught %+v %v", caught, err)
	}

	conn := dial(t, st.GRPCAddr("ingest"))
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+st.DemoKey)

	// Health and readiness.
	for _, name := range Services {
		hc, err := healthpb.NewHealthClient(dial(t, st.GRPCAddr(name))).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil || hc.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%s health: %v %v", name, hc, err)
		}
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			resp, err := http.Get("http://" + st.AdminAddr(name) + path)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("%s %s: %v %v", name, path, resp, err)
			}
			resp.Body.Close()
		}
	}

	ingestC := ingestv1.NewIngestServiceClient(conn)
	// No key: Unauthenticated, nothing stored.
	if _, err := ingestC.PostMessage(ctx, &ingestv1.PostMessageRequest{ConversationId: "c1"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no key: want Unauthenticated, got %v", err)
	}
	// Invalid: InvalidArgument naming the field.
	_, err = ingestC.PostMessage(authed, &ingestv1.PostMessageRequest{ConversationId: "c1", Message: &eventv1.MessagePosted{Text: "no role"}})
	if status.Code(err) != codes.InvalidArgument || !contains(status.Convert(err).Message(), "message_posted.role") {
		t.Fatalf("missing role: want InvalidArgument on role, got %v", err)
	}

	// A tagging rule, in place before the conversation starts.
	tg := taggingv1.NewTaggingServiceClient(dial(t, st.GRPCAddr("tagging")))
	if _, err := tg.CreateRule(authed, &taggingv1.CreateRuleRequest{Rule: &taggingv1.Rule{Name: "reservations", Tag: "reservation",
		Expression: `conversation.messages.exists(m, m.role == "visitor" && m.text.matches("(?i)table for"))`}}); err != nil {
		t.Fatalf("create rule: %v", err)
	}

	msgs := []*eventv1.MessagePosted{
		{MessageId: "m1", Role: eventv1.Role_ROLE_VISITOR, Text: "Hi, I need a table for two tonight"},
		{MessageId: "m2", Role: eventv1.Role_ROLE_BOT, Text: "Sure - which restaurant?", Intent: &eventv1.Intent{Name: "FindRestaurants", Confidence: 0.93}},
	}
	base := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	var first *ingestv1.EventResult
	for i, m := range msgs {
		res, err := ingestC.PostMessage(authed, &ingestv1.PostMessageRequest{ConversationId: "conv-e2e-1", Message: m, ClientEventId: m.MessageId,
			OccurredAt: timestampAt(base.Add(time.Duration(i) * time.Second))})
		if err != nil {
			t.Fatalf("post message %d: %v", i, err)
		}
		if res.StreamSequence == 0 || res.Duplicate {
			t.Fatalf("post message %d: unexpected result %v", i, res)
		}
		if i == 0 {
			first = res
		}
	}
	// A retry with the same client id is a duplicate with the same id.
	again, err := ingestC.PostMessage(authed, &ingestv1.PostMessageRequest{ConversationId: "conv-e2e-1", Message: msgs[0], ClientEventId: "m1", OccurredAt: timestampAt(base)})
	if err != nil || !again.Duplicate || again.EventId != first.EventId || again.StreamSequence != first.StreamSequence {
		t.Fatalf("retry: want duplicate of %v, got %v %v", first, again, err)
	}
	// Its transcript, asked for, lands in the catcher with both messages.
	nc := notificationv1.NewNotificationServiceClient(dial(t, st.GRPCAddr("notification")))
	if _, err := nc.SendTranscript(authed, &notificationv1.SendTranscriptRequest{ConversationId: "conv-e2e-1", Email: "reader@example.com"}); err != nil {
		t.Fatalf("send transcript: %v", err)
	}
	waitTranscript(t, st.MailDir, "reader@example.com", msgs[0].Text, msgs[1].Text)

	rep := reportingv1.NewReportingServiceClient(dial(t, st.GRPCAddr("reporting")))
	var got *reportingv1.Conversation
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err = rep.GetConversation(authed, &reportingv1.GetConversationRequest{ConversationId: "conv-e2e-1"})
		if err == nil && len(got.Messages) == len(msgs) {
			break
		}
		if err != nil && status.Code(err) != codes.NotFound {
			t.Fatalf("get conversation: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("message not projected in time: %v %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, m := range got.Messages {
		if m.Text != msgs[i].Text || m.Role != msgs[i].Role || m.MessageId != msgs[i].MessageId {
			t.Fatalf("message %d: got %v want %v", i, m, msgs[i])
		}
		if !m.OccurredAt.AsTime().Equal(base.Add(time.Duration(i) * time.Second)) {
			t.Fatalf("message %d time: got %v want %v", i, m.OccurredAt.AsTime(), base.Add(time.Duration(i)*time.Second))
		}
	}
	if got.Messages[1].Intent != "FindRestaurants" || len(got.TraceIds) == 0 {
		t.Fatalf("intent/trace ids not projected: %v", got)
	}

	// Tenant isolation: another tenant's key cannot see the conversation.
	other := otherTenantKey(t, ctx, st)
	otherCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+other)
	if _, err := rep.GetConversation(otherCtx, &reportingv1.GetConversationRequest{ConversationId: "conv-e2e-1"}); status.Code(err) != codes.NotFound {
		t.Fatalf("other tenant: want NotFound, got %v", err)
	}
	// An ingest-only key may not read.
	if _, err := rep.GetConversation(metadata.AppendToOutgoingContext(ctx, "x-api-key", ingestOnlyKey(t, ctx, st)), &reportingv1.GetConversationRequest{ConversationId: "conv-e2e-1"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ingest-only key: want PermissionDenied, got %v", err)
	}
	// Across the services: the visitor closes the conversation; lifecycle
	// ends it, ingest then refuses more messages, tagging has tagged it and
	// reporting shows all of that.
	if _, err := ingestC.CloseConversation(authed, &ingestv1.CloseConversationRequest{ConversationId: "conv-e2e-1", ClientEventId: "close",
		Close: &eventv1.ConversationClosed{ClosedBy: eventv1.Actor_ACTOR_VISITOR}}); err != nil {
		t.Fatalf("close: %v", err)
	}
	// Until lifecycle has applied the close (well under a second) ingest
	// still accepts messages; the log orders them before the end.
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, err := ingestC.PostMessage(authed, &ingestv1.PostMessageRequest{ConversationId: "conv-e2e-1", ClientEventId: "after-end",
			Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "still there?"}})
		if status.Code(err) == codes.FailedPrecondition {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest still accepts messages after the close: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	lc := lifecyclev1.NewLifecycleServiceClient(dial(t, st.GRPCAddr("lifecycle")))
	stats, err := lc.GetStats(authed, &lifecyclev1.GetStatsRequest{})
	if err != nil || stats.Ended < 1 || stats.EndedByReason["END_REASON_VISITOR_CLOSED"]+stats.EndedByReason["visitor_closed"] < 1 {
		t.Fatalf("lifecycle stats: %v %v", stats, err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		got, err = rep.GetConversation(authed, &reportingv1.GetConversationRequest{ConversationId: "conv-e2e-1"})
		if err == nil && got.Summary.GetStatus() == "ended" && slices.Contains(got.Tags, "reservation") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("end and tag not projected: %v %v", got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got.Summary.EndReason != eventv1.EndReason_END_REASON_VISITOR_CLOSED || got.Summary.Engagement != eventv1.Engagement_ENGAGEMENT_ENGAGED {
		t.Fatalf("summary after the end: %v", got.Summary)
	}

	// Stop and start again on the same data: the demo key and the
	// conversation survive.
	key := st.DemoKey
	st.Stop()
	st2, err := Start(ctx, Options{Dir: dir, Ports: st.Ports, DemoTenant: "demo", LogOutput: testLog{t}})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer st2.Stop()
	if st2.DemoKey != key {
		t.Fatalf("restart created a new demo key")
	}
	rep2 := reportingv1.NewReportingServiceClient(dial(t, st2.GRPCAddr("reporting")))
	got2, err := rep2.GetConversation(authed, &reportingv1.GetConversationRequest{ConversationId: "conv-e2e-1"})
	if err != nil || len(got2.Messages) != len(got.Messages) || got2.Summary.Status != "ended" {
		t.Fatalf("after restart: %v %v", got2, err)
	}
}

func otherTenantKey(t *testing.T, ctx context.Context, st *Stack) string {
	return keyFor(t, ctx, st, "other", "read")
}

func ingestOnlyKey(t *testing.T, ctx context.Context, st *Stack) string {
	return keyFor(t, ctx, st, "demo", "ingest")
}

func keyFor(t *testing.T, ctx context.Context, st *Stack, tenant, scope string) string {
	t.Helper()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: st.PostgresURL})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	store := tenancy.NewStore(pool)
	_ = store.CreateTenant(ctx, tenant, tenant)
	key, _, err := store.CreateAPIKey(ctx, tenant, "test", []string{scope})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// stackDir returns a temp dir the postgres user can enter.
func stackDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "parley-stack-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return filepath.Clean(d)
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) { return len(p), nil }

func contains(s, sub string) bool { return len(s) >= len(sub) && (s == sub || indexOf(s, sub) >= 0) }

func indexOf(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}
