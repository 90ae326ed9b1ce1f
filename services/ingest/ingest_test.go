package ingest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/service"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/libs/testenv"
	"github.com/parley-dev/parley/libs/testsvc"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type fixture struct {
	nats    *testenv.NATSServer
	client  ingestv1.IngestServiceClient
	key     string
	httpURL string
	store   *tenancy.Store
}

func start(t testing.TB, opts ...func(*ingest.Config)) *fixture {
	return startWith(t, false, opts...)
}

// startWith runs ingest against a fresh JetStream; syncAlways makes it fsync
// before acknowledging.
func startWith(t testing.TB, syncAlways bool, opts ...func(*ingest.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	n := testenv.NATSWithSync(t, syncAlways)
	pgURL := testenv.Postgres(t)
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: pgURL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	key := testsvc.Tenants(t, pgURL, []string{grpcx.ScopeIngest}, "acme")["acme"]
	store := tenancy.NewStore(pool)
	grpcAddr, adminAddr := testsvc.Addrs(t)
	hport, _ := localinfra.FreePort()
	cfg := ingest.Config{
		HTTPAddr: fmt.Sprintf("127.0.0.1:%d", hport), MaxRequestBytes: 64 << 10, CommitMode: "atomic", CommitMaxEvents: 1000, CommitMaxInFlight: 2, CommitLinger: time.Millisecond,
		Config: service.Config{Server: config.Server{ShutdownTimeout: 5 * time.Second}, NATS: config.NATS{URL: n.URL, Replicas: 1, DuplicateWindow: time.Minute},
			Postgres: config.Postgres{URL: pgURL, MaxConns: 4}, GRPCAddr: grpcAddr, AdminAddr: adminAddr, Telemetry: testenv.Telemetry(t, "ingest")},
		MaxBatch: 10, MaxTextBytes: 100, MaxFutureSkew: time.Minute,
	}
	for _, o := range opts {
		o(&cfg)
	}
	testsvc.Serve(t, "ingest", func(ctx context.Context) error { return ingest.Run(ctx, cfg) })
	conn := testsvc.Dial(t, cfg.GRPCAddr)
	f := &fixture{nats: n, client: ingestv1.NewIngestServiceClient(conn), key: key, httpURL: "http://" + cfg.HTTPAddr, store: store}
	// Wait until the server answers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{})
		if status.Code(err) == codes.InvalidArgument {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingest not serving: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return f
}

func (f *fixture) ctx() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+f.key)
}

func (f *fixture) streamMsgs(t testing.TB) uint64 {
	t.Helper()
	nc, err := nats.Connect(f.nats.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), eventbus.ConvStream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

func visitor(conv, text string) *eventv1.Envelope {
	return &eventv1.Envelope{ConversationId: conv, Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text}}}
}

func TestAppendIsAllOrNothing(t *testing.T) {
	f := start(t)
	res, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{visitor("c1", "a"), visitor("c2", "b")}})
	if err != nil || len(res.Results) != 2 || res.Results[0].StreamSequence != 1 || res.Results[1].StreamSequence != 2 {
		t.Fatalf("valid batch: %v %v", res, err)
	}
	// The third event is invalid: nothing of this batch is stored.
	_, err = f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{visitor("c1", "ok"), visitor("c1", "ok"), visitor("c1", string(make([]byte, 101)))}})
	assertField(t, err, "events[2].message_posted.text")
	// Another tenant's id in the envelope.
	other := visitor("c1", "x")
	other.TenantId = "globex"
	_, err = f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: []*eventv1.Envelope{other}})
	assertField(t, err, "events[0].tenant_id")
	// Too many events.
	var many []*eventv1.Envelope
	for range 11 {
		many = append(many, visitor("c1", "x"))
	}
	_, err = f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: many})
	assertField(t, err, "events")
	if got := f.streamMsgs(t); got != 2 {
		t.Fatalf("stream holds %d events, want only the 2 from the valid batch", got)
	}
}

func TestAppendStream(t *testing.T) {
	f := start(t)
	st, err := f.client.AppendStream(f.ctx())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := st.Send(&ingestv1.AppendStreamRequest{Events: []*eventv1.Envelope{visitor("s1", fmt.Sprint(i)), visitor("s2", fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	res, err := st.CloseAndRecv()
	if err != nil || len(res.Results) != 6 {
		t.Fatalf("stream: %v %v", res, err)
	}
	if got := f.streamMsgs(t); got != 6 {
		t.Fatalf("stream holds %d events, want 6", got)
	}
}

func TestJetStreamDownIsUnavailable(t *testing.T) {
	f := start(t)
	f.nats.Shutdown()
	_, err := f.client.PostMessage(f.ctx(), &ingestv1.PostMessageRequest{ConversationId: "c1", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "hi"}, ClientEventId: "m1"})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("want Unavailable while JetStream is down, got %v", err)
	}
	f.nats.Restart()
	// The client retries with the same id once the log is back: stored once.
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := f.client.PostMessage(f.ctx(), &ingestv1.PostMessageRequest{ConversationId: "c1", Message: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: "hi"}, ClientEventId: "m1"})
		if err == nil {
			if res.Duplicate {
				t.Fatal("the failed call must not have stored the event")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func assertField(t *testing.T, err error, field string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("want InvalidArgument on %s, got %v", field, err)
	}
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.FieldViolations) == 1 && br.FieldViolations[0].Field == field {
			return
		}
	}
	t.Fatalf("want a field violation on %s, got %v", field, st.Details())
}
