package notification_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/libs/testsvc"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	"github.com/parley-dev/parley/services/notification"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

type fixture struct {
	t      testing.TB
	cfg    notification.Config
	client notificationv1.NotificationServiceClient
	keys   map[string]string
	bus    *eventbus.Bus
	stop   func()
}

// start runs notification on a fresh JetStream and database with tenant
// acme, webhooks to loopback allowed unless opts say otherwise, and fast
// retries.
func start(t testing.TB, opts ...func(*notification.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	n := testenv.NATS(t)
	pgURL := testenv.Postgres(t)
	grpcAddr, adminAddr := testsvc.Addrs(t)
	httpAddr, _ := testsvc.Addrs(t)
	cfg := notification.Config{
		Config: service.Config{Server: config.Server{ShutdownTimeout: 5 * time.Second}, NATS: config.NATS{URL: n.URL, Replicas: 1, DuplicateWindow: time.Minute},
			Postgres: config.Postgres{URL: pgURL, MaxConns: 6}, GRPCAddr: grpcAddr, AdminAddr: adminAddr,
			Telemetry: testenv.Telemetry(t, "notification")},
		HTTPAddr: httpAddr, AllowPrivateTargets: true, AllowHTTP: true,
		RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond, Poll: 50 * time.Millisecond, AttemptTimeout: 2 * time.Second,
		Partitions: 4, LeaseTTL: 2 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	f := &fixture{t: t, cfg: cfg, keys: testsvc.Tenants(t, pgURL, []string{grpcx.ScopeAdmin}, "acme")}
	f.run()
	f.client = notificationv1.NewNotificationServiceClient(testsvc.Dial(t, grpcAddr))
	var err error
	if f.bus, err = eventbus.Connect(ctx, n.URL, "test-ingest", eventbus.Options{Producer: "ingest"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.bus.Close() })
	f.waitFor("serving", func() bool {
		_, err := f.client.ListSubscriptions(f.ctx(), &notificationv1.ListSubscriptionsRequest{})
		return err == nil
	})
	return f
}

// run starts the service; the returned function stops it.
func (f *fixture) run() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- notification.Run(ctx, f.cfg) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				f.t.Errorf("notification: %v", err)
			}
		})
	}
	f.t.Cleanup(stop)
	f.stop = stop
	return stop
}

func (f *fixture) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+f.keys["acme"])
}

func (f *fixture) publish(envs ...*eventv1.Envelope) {
	f.t.Helper()
	for _, e := range envs {
		if _, err := f.bus.Publish(context.Background(), proto.Clone(e).(*eventv1.Envelope)); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) waitFor(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fixture) subscribe(url string, kinds []string, condition string) *notificationv1.Subscription {
	f.t.Helper()
	sub, err := f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{
		Target: url, EventKinds: kinds, Condition: condition}})
	if err != nil {
		f.t.Fatal(err)
	}
	return sub
}

// receiver is a webhook endpoint that verifies every request's signature
// (with its own verification, not the service's) and fails the first
// failures requests.
type receiver struct {
	srv *httptest.Server

	mu        sync.Mutex
	secret    string
	failures  int
	requests  int
	successes map[string]int // webhook-id -> 2xx answers
	bodies    []map[string]any
	bad       []string
}

func newReceiver(t testing.TB, failures int) *receiver {
	r := &receiver{failures: failures, successes: map[string]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	id, ts, sig := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature")
	if err := verifyIndependently(r.secret, id, ts, sig, body); err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if r.failures > 0 {
		r.failures--
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	r.bodies = append(r.bodies, m)
	r.successes[id]++
	w.WriteHeader(http.StatusNoContent)
}

func (r *receiver) setSecret(s string) {
	r.mu.Lock()
	r.secret = s
	r.mu.Unlock()
}

func (r *receiver) snapshot() (requests int, successes map[string]int, bodies []map[string]any, bad []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := map[string]int{}
	for k, v := range r.successes {
		s[k] = v
	}
	return r.requests, s, append([]map[string]any(nil), r.bodies...), append([]string(nil), r.bad...)
}

func conversationThatEnds(id string) []*eventv1.Envelope {
	cv := evtest.New("acme", id)
	return []*eventv1.Envelope{cv.Started("support"), cv.Visitor("where is my order?"), cv.Bot("Let me check.", 400),
		cv.Ended(eventv1.EndReason_END_REASON_VISITOR_CLOSED)}
}

func TestConversationEndProducesSignedWebhook(t *testing.T) {
	f := start(t)
	rcv := newReceiver(t, 0)
	sub := f.subscribe(rcv.srv.URL+"/hook", []string{"conversation_ended"}, `conversation.visitor_messages >= 1 && event.kind == "conversation_ended"`)
	if !strings.HasPrefix(sub.Secret, "whsec_") {
		t.Fatalf("secret %q", sub.Secret)
	}
	rcv.setSecret(sub.Secret)
	// A condition that selects nothing: no webhook for it.
	quiet := newReceiver(t, 0)
	q := f.subscribe(quiet.srv.URL, []string{"conversation_ended"}, `conversation.visitor_messages > 5`)
	quiet.setSecret(q.Secret)

	f.publish(conversationThatEnds("c1")...)
	f.waitFor("the webhook", func() bool { _, s, _, _ := rcv.snapshot(); return len(s) == 1 })
	time.Sleep(300 * time.Millisecond)
	n, succ, bodies, bad := rcv.snapshot()
	if n != 1 || len(bad) != 0 || len(bodies) != 1 {
		t.Fatalf("requests %d, bad signatures %v, bodies %d", n, bad, len(bodies))
	}
	b := bodies[0]
	data := b["data"].(map[string]any)
	ev, conv := data["event"].(map[string]any), data["conversation"].(map[string]any)
	if b["type"] != "conversation_ended" || ev["conversation_id"] != "c1" || ev["conversation_ended"] == nil {
		t.Fatalf("payload %v", b)
	}
	// The conversation summary at that point: one visitor and one bot message, ended.
	if conv["visitor_messages"] != "1" && conv["visitor_messages"] != float64(1) || conv["ended"] != true {
		t.Fatalf("conversation summary %v", conv)
	}
	for id := range succ {
		if !strings.HasPrefix(id, "msg_") {
			t.Fatalf("webhook-id %q", id)
		}
	}
	if qn, _, _, _ := quiet.snapshot(); qn != 0 {
		t.Fatalf("the non-matching subscription got %d requests", qn)
	}
	// The delivery log shows it delivered with its one attempt.
	ds, err := f.client.ListDeliveries(f.ctx(), &notificationv1.ListDeliveriesRequest{SubscriptionId: sub.SubscriptionId})
	if err != nil || len(ds.Deliveries) != 1 || ds.Deliveries[0].State != "delivered" || ds.Deliveries[0].LastStatusCode != 204 {
		t.Fatalf("deliveries %v, %v", ds, err)
	}
}

func TestFailingReceiverGetsTheDeliveryExactlyOnce(t *testing.T) {
	// Short claims: a delivered delivery still claimable would be sent
	// again within the wait below.
	f := start(t, func(c *notification.Config) { c.AttemptTimeout = 300 * time.Millisecond })
	rcv := newReceiver(t, 5)
	sub := f.subscribe(rcv.srv.URL, []string{"conversation_ended"}, "")
	rcv.setSecret(sub.Secret)
	f.publish(conversationThatEnds("c2")...)
	f.waitFor("the delivery", func() bool { _, s, _, _ := rcv.snapshot(); return len(s) == 1 })
	time.Sleep(1500 * time.Millisecond)
	n, succ, _, bad := rcv.snapshot()
	if n != 6 || len(bad) != 0 {
		t.Fatalf("requests %d (want 5 failures and 1 success), bad signatures %v", n, bad)
	}
	for id, c := range succ {
		if c != 1 {
			t.Fatalf("%s succeeded %d times", id, c)
		}
	}
	as, err := f.client.ListAttempts(f.ctx(), &notificationv1.ListAttemptsRequest{SubscriptionId: sub.SubscriptionId})
	if err != nil {
		t.Fatal(err)
	}
	ok, failed := 0, 0
	for _, a := range as.Attempts {
		if a.Success {
			ok++
		} else if a.StatusCode == 500 && a.Error != "" {
			failed++
		}
	}
	if ok != 1 || failed != 5 {
		t.Fatalf("attempt log: %d successes, %d failures with status 500: %v", ok, failed, as.Attempts)
	}
	// The same counts on /metrics.
	resp, err := http.Get("http://" + f.cfg.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	for _, want := range []string{`parley_notification_attempts_total{kind="webhook",otel_scope_name`, `result="failure"} 5`, `result="success"} 1`} {
		if !strings.Contains(string(metrics), want) {
			t.Fatalf("/metrics lacks %s:\n%s", want, grep(string(metrics), "parley_notification_attempts_total"))
		}
	}
	// A replay sends the same delivery again under the same id.
	ds, _ := f.client.ListDeliveries(f.ctx(), &notificationv1.ListDeliveriesRequest{SubscriptionId: sub.SubscriptionId})
	if _, err := f.client.ReplayDelivery(f.ctx(), &notificationv1.ReplayDeliveryRequest{DeliveryId: ds.Deliveries[0].DeliveryId}); err != nil {
		t.Fatal(err)
	}
	f.waitFor("the replay", func() bool { _, s, _, _ := rcv.snapshot(); return s[ds.Deliveries[0].DeliveryId] == 2 })
}

func TestRestartMidRetryLosesNothing(t *testing.T) {
	f := start(t, func(c *notification.Config) { c.RetryBase, c.RetryMax = 100*time.Millisecond, 200*time.Millisecond })
	rcv := newReceiver(t, 1_000_000)
	sub := f.subscribe(rcv.srv.URL, []string{"conversation_ended"}, "")
	rcv.setSecret(sub.Secret)
	f.publish(conversationThatEnds("c3")...)
	f.waitFor("failing attempts", func() bool { n, _, _, _ := rcv.snapshot(); return n >= 2 })
	// Stop the only replica mid-retry; the receiver recovers while it is down.
	f.stop()
	rcv.mu.Lock()
	rcv.failures = 0
	rcv.mu.Unlock()
	f.run()
	f.waitFor("the delivery after the restart", func() bool { _, s, _, _ := rcv.snapshot(); return len(s) == 1 })
	_, succ, _, _ := rcv.snapshot()
	for id, c := range succ {
		if c != 1 {
			t.Fatalf("%s succeeded %d times", id, c)
		}
	}
}

func TestSSRFTargetRefused(t *testing.T) {
	f := start(t, func(c *notification.Config) { c.AllowPrivateTargets = false })
	rcv := newReceiver(t, 0)
	// A literal internal address is refused when the subscription is saved.
	for _, u := range []string{rcv.srv.URL, "http://169.254.169.254/latest/meta-data", "http://10.0.0.1/", "http://[::1]/"} {
		_, err := f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: &notificationv1.Subscription{Target: u}})
		assertInvalid(t, err, "subscription.target")
	}
	// A name that resolves to loopback passes the save and is refused at
	// connect time: the receiver sees nothing and the attempt says why.
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(rcv.srv.URL, "http://"))
	sub := f.subscribe("http://"+loopbackName(t)+":"+port+"/hook", nil, "")
	if _, err := f.client.SendTestEvent(f.ctx(), &notificationv1.SendTestEventRequest{SubscriptionId: sub.SubscriptionId}); err != nil {
		t.Fatal(err)
	}
	var as *notificationv1.ListAttemptsResponse
	f.waitFor("a refused attempt", func() bool {
		var err error
		as, err = f.client.ListAttempts(f.ctx(), &notificationv1.ListAttemptsRequest{SubscriptionId: sub.SubscriptionId})
		return err == nil && len(as.Attempts) > 0
	})
	if a := as.Attempts[0]; a.Success || !strings.Contains(a.Error, "refused by the SSRF policy") || !strings.Contains(a.Error, "loopback") {
		t.Fatalf("attempt %v", a)
	}
	if n, _, _, _ := rcv.snapshot(); n != 0 {
		t.Fatalf("the internal receiver got %d requests", n)
	}
}

func TestBadSubscriptionsAreInvalidArgument(t *testing.T) {
	f := start(t)
	cases := map[string]*notificationv1.Subscription{
		"subscription.condition":      {Target: "http://example.com/", Condition: "conversation.nope =="},
		"subscription.event_kinds[1]": {Target: "http://example.com/", EventKinds: []string{"conversation_ended", "exploded"}},
		"subscription.kind":           {Kind: "pigeon", Target: "http://example.com/"},
		"subscription.target":         {Target: "ftp://example.com/"},
		"subscription.owner_email":    {Target: "http://example.com/", OwnerEmail: "not an address"},
	}
	for field, s := range cases {
		_, err := f.client.CreateSubscription(f.ctx(), &notificationv1.CreateSubscriptionRequest{Subscription: s})
		assertInvalid(t, err, field)
	}
	// Nothing was stored.
	l, err := f.client.ListSubscriptions(f.ctx(), &notificationv1.ListSubscriptionsRequest{})
	if err != nil || len(l.Subscriptions) != 0 {
		t.Fatalf("subscriptions %v, %v", l, err)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// loopbackName is a host name (not "localhost", which is refused by name)
// that resolves to a loopback address: the machine's own name.
func loopbackName(t *testing.T) string {
	host, _ := os.Hostname()
	addrs, err := net.LookupHost(host)
	if err != nil || len(addrs) == 0 {
		t.Skipf("the host name %q does not resolve: no name to test DNS resolution to loopback with", host)
	}
	for _, a := range addrs {
		if ip := net.ParseIP(a); ip == nil || !ip.IsLoopback() {
			t.Skipf("the host name %q resolves to %v, not loopback", host, addrs)
		}
	}
	return host
}

func assertInvalid(t *testing.T, err error, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("%s: got %v, want InvalidArgument", field, err)
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) == 1 && br.FieldViolations[0].Field == field {
			return
		}
	}
	t.Fatalf("%s: no field violation naming it in %v", field, st.Details())
}

// verifyIndependently checks a Standard Webhooks signature with its own
// HMAC, as a receiver would.
func verifyIndependently(secret, id, ts, sigs string, body []byte) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return err
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		return fmt.Errorf("bad timestamp %q", ts)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return fmt.Errorf("no valid signature in %q", sigs)
}
