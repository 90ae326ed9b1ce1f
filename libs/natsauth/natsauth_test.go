package natsauth_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/natsauth"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
)

// authServer starts an embedded server with exactly the permissions of
// natsauth.For (the ones rendered into deploy/).
func authServer(t *testing.T) (url string, passwords map[string]string) {
	t.Helper()
	passwords = map[string]string{natsauth.Operator: "op-secret"}
	for _, s := range natsauth.Services() {
		passwords[s] = s + "-secret"
	}
	srv, err := localinfra.StartNATS(localinfra.NATSOptions{Dir: t.TempDir(), Port: -1, Passwords: passwords})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv.ClientURL(), passwords
}

// violations collects the permission errors the server reports to a
// connection.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

func (v *violations) take() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := v.errs
	v.errs = nil
	return out
}

// connect connects as a service, the way libs/service does.
func connect(t *testing.T, url, service, password string) (*eventbus.Bus, *violations) {
	t.Helper()
	opts, err := natsauth.ClientOptions(service, config.NATS{User: service, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	v := &violations{}
	b, err := eventbus.Connect(context.Background(), url, "test-"+service,
		eventbus.Options{Producer: service, PublishTimeout: 2 * time.Second}, append(opts, nats.ErrorHandler(v.handler))...)
	if err != nil {
		t.Fatalf("%s: %v", service, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, v
}

func envelope(tenant, conv, id string) *eventv1.Envelope {
	return &eventv1.Envelope{EventId: id, TenantId: tenant, ConversationId: conv,
		Payload: &eventv1.Envelope_ConversationClosed{ConversationClosed: &eventv1.ConversationClosed{}}}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// consumeN consumes with a durable until n events were handled; fail
// dead-letters every event for which it returns true.
func consumeN(t *testing.T, b *eventbus.Bus, durable string, n int, fail func(*eventbus.Delivery) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seen := 0
	err := b.Consume(ctx, eventbus.ConsumerConfig{Durable: durable, BatchSize: 10, MaxWait: 200 * time.Millisecond},
		func(_ context.Context, ds []*eventbus.Delivery) error {
			for _, d := range ds {
				seen++
				if fail != nil && fail(d) {
					return eventbus.Permanent(errors.New("bad event"))
				}
			}
			if seen >= n {
				cancel()
			}
			return nil
		})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("%s consume: %v", durable, err)
	}
	if seen < n {
		t.Fatalf("%s consumed %d events, want %d", durable, seen, n)
	}
}

// TestServicesCanDoTheirWork runs what each service does on NATS, through
// the same library code, as its own user.
func TestServicesCanDoTheirWork(t *testing.T) {
	url, pw := authServer(t)
	if _, err := nats.Connect(url); err == nil {
		t.Fatal("a client without credentials was let in")
	}
	if _, err := nats.Connect(url, nats.UserInfo("reporting", "wrong")); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	ingest, ingestV := connect(t, url, "ingest", pw["ingest"])
	lifecycle, lifeV := connect(t, url, "lifecycle", pw["lifecycle"])
	tagging, tagV := connect(t, url, "tagging", pw["tagging"])
	reporting, repV := connect(t, url, "reporting", pw["reporting"])
	notification, notV := connect(t, url, "notification", pw["notification"])

	// Services other than ingest wait for the streams ingest creates.
	waited := make(chan error, 4)
	for _, b := range []*eventbus.Bus{lifecycle, tagging, reporting, notification} {
		go func() {
			waited <- natsauth.WaitForStreams(ctxT(t, 20*time.Second), b.JetStream(), nil, eventbus.ConvStream, eventbus.DLQStream)
		}()
	}
	time.Sleep(300 * time.Millisecond)
	ctx := ctxT(t, 60*time.Second)
	if err := ingest.EnsureStreams(ctx); err != nil {
		t.Fatalf("ingest creates the streams: %v", err)
	}
	for range 4 {
		if err := <-waited; err != nil {
			t.Fatalf("waiting for the streams: %v", err)
		}
	}
	for name, b := range map[string]*eventbus.Bus{"ingest": ingest, "lifecycle": lifecycle, "tagging": tagging, "reporting": reporting, "notification": notification} {
		if err := b.Ready(ctx); err != nil {
			t.Errorf("%s readiness: %v", name, err)
		}
	}

	// Ingest: the ended-conversations bucket (created if lifecycle has not
	// yet), watched into memory.
	_, err := ingest.JetStream().KeyValue(ctx, convview.Bucket)
	if !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("ingest looks up the bucket: %v", err)
	}
	ikv, err := convview.Ensure(ctx, ingest, time.Hour, 1)
	if err != nil {
		t.Fatalf("ingest creates the bucket: %v", err)
	}
	view, err := convview.Watch(ctx, ikv, time.Hour, nil)
	if err != nil {
		t.Fatalf("ingest watches the bucket: %v", err)
	}

	// Ingest appends events, one by one and as an atomic batch.
	for i := range 3 {
		if _, err := ingest.Publish(ctx, envelope("acme", fmt.Sprintf("c%d", i), fmt.Sprintf("e%d", i))); err != nil {
			t.Fatalf("ingest publishes: %v", err)
		}
	}
	batch := []*nats.Msg{}
	for i := range 2 {
		env := envelope("acme", "b", fmt.Sprintf("batch-%d", i))
		ingest.Complete(env, time.Now())
		m := nats.NewMsg(eventbus.ConvSubject("acme", "b", env.Kind))
		if m.Data, err = proto.Marshal(env); err != nil {
			t.Fatal(err)
		}
		m.Header.Set(jetstream.MsgIDHeader, env.EventId)
		batch = append(batch, m)
	}
	if _, err := ingest.PublishAtomic(ctx, batch); err != nil {
		t.Fatalf("ingest publishes an atomic batch: %v", err)
	}
	st, err := ingest.JetStream().Stream(ctx, eventbus.ConvStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.GetLastMsgForSubject(ctx, eventbus.ConvSubject("acme", "c1", "conversation_closed")); err != nil {
		t.Fatalf("ingest reads a conversation's close: %v", err)
	}

	// Lifecycle: its bucket, its consumer (with a dead letter and a reset),
	// its events, the close lookup.
	lkv, err := convview.Ensure(ctx, lifecycle, time.Hour, 1)
	if err != nil {
		t.Fatalf("lifecycle ensures the bucket: %v", err)
	}
	w := convview.NewWriter(lkv, lifecycle.PublishAtomic)
	now := time.Now()
	if err := w.MarkEnded(ctx, "acme", "c0", now, eventv1.EndReason_END_REASON_VISITOR_CLOSED); err != nil {
		t.Fatalf("lifecycle marks a conversation ended: %v", err)
	}
	if err := w.MarkEndedAll(ctx, []convview.Entry{{TenantID: "acme", ConversationID: "c1", At: now}, {TenantID: "acme", ConversationID: "c2", At: now}}); err != nil {
		t.Fatalf("lifecycle marks conversations ended in a batch: %v", err)
	}
	consumeN(t, lifecycle, "lifecycle", 4, func(d *eventbus.Delivery) bool { return d.StreamSeq == 2 })
	if err := lifecycle.JetStream().DeleteConsumer(ctx, eventbus.ConvStream, "lifecycle"); err != nil {
		t.Fatalf("lifecycle resets its consumer: %v", err)
	}
	for _, env := range []*eventv1.Envelope{
		{EventId: "end-c0", TenantId: "acme", ConversationId: "c0", Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{}}},
		{EventId: "join-c0", TenantId: "acme", ConversationId: "c0", Payload: &eventv1.Envelope_AgentJoined{AgentJoined: &eventv1.AgentJoined{}}},
	} {
		if _, err := lifecycle.Publish(ctx, env); err != nil {
			t.Fatalf("lifecycle publishes %s: %v", eventbus.Kind(env), err)
		}
	}
	lst, err := lifecycle.JetStream().Stream(ctx, eventbus.ConvStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lst.GetLastMsgForSubject(ctx, eventbus.ConvSubject("acme", "c1", "conversation_closed")); err != nil {
		t.Fatalf("lifecycle reads a conversation's close: %v", err)
	}
	// Lifecycle reads its partitions with ordered consumers from a position.
	loc, err := lifecycle.JetStream().OrderedConsumer(ctx, eventbus.ConvStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: 2})
	if err != nil {
		t.Fatalf("lifecycle partition reader: %v", err)
	}
	lb, err := loc.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatalf("lifecycle partition reader fetch: %v", err)
	}
	var lseqs []uint64
	for m := range lb.Messages() {
		meta, _ := m.Metadata()
		lseqs = append(lseqs, meta.Sequence.Stream)
	}
	if len(lseqs) != 3 || lseqs[0] != 2 {
		t.Fatalf("lifecycle partition reader read %v (%v)", lseqs, lb.Error())
	}

	// Tagging: its consumer, its events, a backfill's ordered consumer.
	consumeN(t, tagging, "tagging", 7, nil)
	if _, err := tagging.Publish(ctx, &eventv1.Envelope{EventId: "tag-c1", TenantId: "acme", ConversationId: "c1",
		Payload: &eventv1.Envelope_TagApplied{TagApplied: &eventv1.TagApplied{}}}); err != nil {
		t.Fatalf("tagging publishes: %v", err)
	}
	oc, err := tagging.JetStream().OrderedConsumer(ctx, eventbus.ConvStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{eventbus.TenantSubjects("acme")}, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatalf("tagging backfill consumer: %v", err)
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(100))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 8 {
		if _, err := it.Next(jetstream.NextMaxWait(5 * time.Second)); err != nil {
			t.Fatalf("tagging backfill message %d: %v", i, err)
		}
	}
	it.Stop()

	// Reporting: its consumer, a rebuild's replay.
	consumeN(t, reporting, "reporting-projector", 8, nil)
	last, err := reporting.LastSequence(ctx)
	if err != nil || last != 8 {
		t.Fatalf("reporting reads the last sequence: %d, %v", last, err)
	}
	n := 0
	if _, err := reporting.Replay(ctx, 1, last, 3, nil, func(_ context.Context, ds []*eventbus.Delivery) error { n += len(ds); return nil }); err != nil || n != 8 {
		t.Fatalf("reporting replays: %d events, %v", n, err)
	}

	// Ingest's view saw lifecycle's entries.
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range []string{"c0", "c1", "c2"} {
		for {
			if _, ok := view.Ended("acme", c); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("ingest's view does not show %s ended", c)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// The dead letter is in PARLEY_DLQ.
	dlq, err := ingest.JetStream().Stream(ctx, eventbus.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := dlq.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Fatalf("dead letters: %+v, %v", info, err)
	}

	for name, v := range map[string]*violations{"ingest": ingestV, "lifecycle": lifeV, "tagging": tagV, "reporting": repV, "notification": notV} {
		if errs := v.take(); len(errs) > 0 {
			t.Errorf("%s hit permission errors doing its work: %q", name, errs)
		}
	}
}

// TestServicesCannotOverstep: each service is refused what it has no
// business doing.
func TestServicesCannotOverstep(t *testing.T) {
	url, pw := authServer(t)
	ingest, ingestV := connect(t, url, "ingest", pw["ingest"])
	ctx := ctxT(t, 60*time.Second)
	if err := ingest.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := convview.Ensure(ctx, ingest, time.Hour, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := ingest.Publish(ctx, envelope("acme", "c0", "e0")); err != nil {
		t.Fatal(err)
	}
	bus := map[string]*eventbus.Bus{}
	viol := map[string]*violations{}
	for _, s := range []string{"lifecycle", "tagging", "reporting", "notification"} {
		bus[s], viol[s] = connect(t, url, s, pw[s])
	}
	short := func() context.Context { return ctxT(t, 1500*time.Millisecond) }
	refused := func(what string, err error, v *violations) {
		t.Helper()
		errs := v.take()
		if err == nil {
			t.Errorf("%s: allowed", what)
			return
		}
		if !strings.Contains(strings.ToLower(err.Error()+strings.Join(errs, " ")), "permission") {
			t.Errorf("%s: failed without a permission violation: %v %q", what, err, errs)
		}
	}
	// Nobody but ingest appends client events; reporting and notification
	// append nothing at all.
	for _, s := range []string{"reporting", "notification"} {
		_, err := bus[s].Publish(short(), envelope("acme", "c9", "forged-"+s))
		refused(s+" publishes to parley.conv", err, viol[s])
	}
	// Each producer appends only its own kinds: ingest no server kinds,
	// tagging no lifecycle kinds, lifecycle no client or tagging kinds.
	forged := map[string]*eventv1.Envelope{
		"ingest":    {EventId: "f1", TenantId: "acme", ConversationId: "c0", Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{}}},
		"tagging":   {EventId: "f2", TenantId: "acme", ConversationId: "c0", Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{}}},
		"lifecycle": {EventId: "f3", TenantId: "acme", ConversationId: "c0", Payload: &eventv1.Envelope_TagApplied{TagApplied: &eventv1.TagApplied{}}},
	}
	bus["ingest"], viol["ingest"] = ingest, ingestV
	for s, env := range forged {
		_, err := bus[s].Publish(short(), env)
		refused(s+" appends "+eventbus.Kind(env), err, viol[s])
	}
	_, err := bus["lifecycle"].Publish(short(), envelope("acme", "c0", "f4"))
	refused("lifecycle appends conversation_closed", err, viol["lifecycle"])
	// Only ingest creates or changes the streams.
	for _, s := range []string{"lifecycle", "tagging", "reporting", "notification"} {
		refused(s+" updates the streams", bus[s].EnsureStreams(short()), viol[s])
	}
	// Only lifecycle writes the ended-conversations view.
	for _, s := range []string{"tagging", "reporting"} {
		_, err := bus[s].Conn().Request("$KV."+convview.Bucket+".acme.c0", []byte("{}"), time.Second)
		refused(s+" writes the ended-conversations bucket", err, viol[s])
	}
	// A service cannot use or delete another's durable consumer.
	_, err = bus["tagging"].JetStream().CreateOrUpdateConsumer(short(), eventbus.ConvStream, jetstream.ConsumerConfig{Durable: "reporting-projector", AckPolicy: jetstream.AckExplicitPolicy})
	refused("tagging creates reporting's consumer", err, viol["tagging"])
	if _, err := bus["lifecycle"].JetStream().CreateOrUpdateConsumer(ctx, eventbus.ConvStream, jetstream.ConsumerConfig{Durable: "lifecycle", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	refused("reporting deletes lifecycle's consumer", bus["reporting"].JetStream().DeleteConsumer(short(), eventbus.ConvStream, "lifecycle"), viol["reporting"])
	_, err = bus["reporting"].Conn().Request("$JS.API.CONSUMER.MSG.NEXT.PARLEY_CONV.lifecycle", []byte(`{"batch":1}`), time.Second)
	refused("reporting pulls lifecycle's events", err, viol["reporting"])
	// Dead letters only under one's own consumer name.
	err = bus["tagging"].Conn().Publish("parley.dlq.lifecycle", []byte("x"))
	if err == nil {
		err = bus["tagging"].Conn().Flush()
		time.Sleep(200 * time.Millisecond)
		if len(viol["tagging"].errs) > 0 {
			err = errors.New("permission violation")
		}
	}
	refused("tagging dead-letters as lifecycle", err, viol["tagging"])
	// Nobody subscribes to the event subjects directly or to another's
	// replies.
	for _, subj := range []string{"parley.conv.v1.>", "_INBOX.ingest.>", ">"} {
		sub, err := bus["reporting"].Conn().SubscribeSync(subj)
		if err == nil {
			_ = bus["reporting"].Conn().Flush()
			_, err = sub.NextMsg(500 * time.Millisecond)
		}
		refused("reporting subscribes to "+subj, err, viol["reporting"])
	}
}
