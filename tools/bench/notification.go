package bench

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/tenancy"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	"github.com/parley-dev/parley/services/notification/notifybench"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// Notification phase figures.
const (
	notifRate    = 1000 // events/s for the latency figure
	notifFanSubs = 100  // subscriptions one event fans out to
	notifFanEvts = 20   // events fanned out
	// notifTarget is the p99 event → webhook target.
	notifTarget = time.Second
)

// notificationEnv lifts notification's per-endpoint limits (defaults: 4
// calls in flight and 50 calls/s per subscription, which protect real
// receivers) so one receiver can take the whole 1,000 events/s; set before
// the suite starts, unless the caller set them.
func notificationEnv() map[string]string {
	return map[string]string{
		"PARLEY_NOTIFICATION_ENDPOINT_RATE":        "5000",
		"PARLEY_NOTIFICATION_ENDPOINT_CONCURRENCY": "64",
		"PARLEY_NOTIFICATION_WORKERS":              "128",
	}
}

// measureNotification appends conversation_started events through ingest
// at 1,000/s for one phase to a subscription whose webhook is a receiver
// in this process and reports the latency from ingest's acknowledgement to
// the webhook's arrival, then fans events out to 100 subscriptions, and
// reports notification's peak resident memory.
func measureNotification(ctx context.Context, o Options, s *suite, rep *Report, prof *profiler, logf logFunc) error {
	pool, err := pgxpool.New(ctx, s.PostgresURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	key, _, err := tenancy.NewStore(pool).CreateAPIKey(ctx, s.DemoTenant, "bench-notification", []string{grpcx.ScopeAdmin})
	if err != nil {
		return fmt.Errorf("bench: notification key: %w", err)
	}
	conn, err := grpc.NewClient(s.GRPCAddr("notification"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := notificationv1.NewNotificationServiceClient(conn)
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
	iconn, err := grpc.NewClient(s.GRPCAddr("ingest"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer iconn.Close()
	in := ingestv1.NewIngestServiceClient(iconn)
	ictx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.DemoKey)
	// Through ingest's Append, as a bot runtime sends them (one event per
	// call; ingest's group commit batches the concurrent calls).
	publish := func(_ context.Context, env *eventv1.Envelope) error {
		_, err := in.Append(ictx, &ingestv1.AppendRequest{Events: []*eventv1.Envelope{{ConversationId: env.GetConversationId(),
			Payload: env.GetPayload()}}})
		return err
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)

	// Latency at 1,000 events/s to one receiver.
	lat := notifybench.NewReceiver()
	latSrv := httptest.NewServer(lat)
	defer latSrv.Close()
	latSub, err := client.CreateSubscription(actx, &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{
		Name: "bench latency", Target: latSrv.URL, EventKinds: []string{"conversation_started"}}})
	if err != nil {
		return fmt.Errorf("bench: subscription: %w", err)
	}
	total := int(o.Phase.Seconds() * notifRate)
	logf("notification: %d conversation_started events at %d/s to one webhook", total, notifRate)
	wait := prof.cpu(ctx, "notification", o.Phase+5*time.Second)
	begin := time.Now()
	sent, err := notifybench.Publish(ctx, notifRate, total, func(i int) *eventv1.Envelope {
		return evtest.New(s.DemoTenant, fmt.Sprintf("nb-%s-%d", run, i)).Started("support")
	}, publish)
	pace := float64(len(sent)) / time.Since(begin).Seconds()
	if len(sent) == 0 {
		return fmt.Errorf("bench: notification load: %w", err)
	}
	failed := ""
	if err != nil {
		// Measured on what was acknowledged; the failures are reported.
		failed = fmt.Sprintf(", %d publishes failed (first: %v)", total-len(sent), err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = notifybench.Wait(wctx, func() bool { n, _ := lat.Counts(); return n >= len(sent) })
	cancel()
	wait()
	got, _ := lat.Counts()
	ls := lat.Latencies(sent)
	note := fmt.Sprintf("%d events published at %.0f/s%s, %d webhooks received", len(sent), pace, failed, got)
	if err != nil {
		note += " (gave up waiting after 2 min)"
	}
	p99 := notifybench.Percentile(ls, 0.99)
	rep.add(Result{Group: "Notification", Name: "event → webhook latency, p50 (at 1,000 events/s)", Value: ms(notifybench.Percentile(ls, 0.5)), Unit: "ms", Note: note})
	rep.add(Result{Group: "Notification", Name: "event → webhook latency, p99 (at 1,000 events/s)", Value: ms(p99), Unit: "ms",
		Target: "p99 ≤ 1 s", Met: met(err == nil && p99 <= notifTarget), Note: note})

	logf("notification: p50 %v, p99 %v (%s)", notifybench.Percentile(ls, 0.5), p99, note)

	// Fan-out: each event to 100 subscriptions (one endpoint each), the
	// most a tenant may have by default: the latency subscription goes.
	if _, err := client.DeleteSubscription(actx, &notificationv1.DeleteSubscriptionRequest{SubscriptionId: latSub.GetSubscriptionId()}); err != nil {
		return fmt.Errorf("bench: delete subscription: %w", err)
	}
	fan := notifybench.NewReceiver()
	fanSrv := httptest.NewServer(fan)
	defer fanSrv.Close()
	for i := range notifFanSubs {
		if _, err := client.CreateSubscription(actx, &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{
			Name: fmt.Sprintf("bench fan-out %d", i), Target: fmt.Sprintf("%s/%d", fanSrv.URL, i), EventKinds: []string{"message_posted"}}}); err != nil {
			return fmt.Errorf("bench: subscription: %w", err)
		}
	}
	logf("notification: %d events fanned out to %d subscriptions", notifFanEvts, notifFanSubs)
	begin = time.Now()
	for i := range notifFanEvts {
		if err := publish(ctx, evtest.New(s.DemoTenant, fmt.Sprintf("nf-%s-%d", run, i)).Visitor("hello")); err != nil {
			return err
		}
	}
	want := notifFanEvts * notifFanSubs
	wctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
	err = notifybench.Wait(wctx, func() bool { _, calls := fan.Counts(); return calls >= want })
	cancel()
	_, calls := fan.Counts()
	note = fmt.Sprintf("%d events × %d subscriptions, %d deliveries received", notifFanEvts, notifFanSubs, calls)
	if err != nil {
		note += " (gave up waiting after 2 min)"
	}
	rate := float64(calls) / time.Since(begin).Seconds()
	logf("notification: fan-out %.0f deliveries/s (%s)", rate, note)
	rep.add(Result{Group: "Notification", Name: "fan-out of one event to 100 subscriptions", Value: rate, Unit: "deliveries/s", Note: note})
	if rss, ok := s.PeakRSS()["notification"]; ok {
		mb := float64(rss) / (1 << 20)
		rep.add(Result{Group: "Notification", Name: "notification: peak resident memory (whole run)", Value: mb, Unit: "MB",
			Target: "< 150 MB", Met: met(mb < 150)})
	}
	return nil
}
