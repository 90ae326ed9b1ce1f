package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fakeIngest stores events like ingest does (ids from client_event_id,
// duplicates reported with the original's sequence) and checks that each
// conversation's events arrive in order. It can fail calls after storing
// them, as an event log that stored a batch but did not confirm it would.
type fakeIngest struct {
	ingestv1.UnimplementedIngestServiceServer
	mu      sync.Mutex
	keys    map[string]string // key → tenant
	seq     uint64
	stored  map[string]uint64 // event id → sequence
	last    map[string]int    // tenant/conversation → index of its last stored event
	ended   map[string]bool   // tenant/conversation → refuse its events
	calls   int
	failNth int // every failNth call fails with Unavailable after storing
	// endOnClose ends a conversation once its close is stored, as lifecycle
	// does: later events of it, retries included, are refused.
	endOnClose bool
	// throttleNth: the second batch of every throttleNth stream is refused
	// with ResourceExhausted (and a retry delay); the first stays stored.
	throttleNth int
	streams     int
	// throttledOnce remembers throttled batches (by their first event's
	// client id): a resend is never throttled again, so the test's progress
	// does not depend on how the senders' streams interleave in time.
	throttledOnce map[string]bool
	errs          []string
}

func (f *fakeIngest) wasThrottled(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.throttledOnce == nil {
		f.throttledOnce = map[string]bool{}
	}
	seen := f.throttledOnce[id]
	f.throttledOnce[id] = true
	return seen
}

func newFake(keys map[string]string) *fakeIngest {
	return &fakeIngest{keys: keys, stored: map[string]uint64{}, last: map[string]int{}, ended: map[string]bool{}}
}

func (f *fakeIngest) start(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	ingestv1.RegisterIngestServiceServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func (f *fakeIngest) tenant(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := f.keys[strings.TrimPrefix(v, "Bearer ")]; ok {
			return t, nil
		}
	}
	return "", status.Error(codes.Unauthenticated, "invalid API key")
}

func (f *fakeIngest) appendBatch(ctx context.Context, events []*eventv1.Envelope) ([]*ingestv1.EventResult, error) {
	tenant, err := f.tenant(ctx)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, e := range events {
		if f.ended[tenant+"/"+e.ConversationId] {
			return nil, status.Errorf(codes.FailedPrecondition, "events[%d]: conversation %s ended at 2026-01-01T00:00:00Z (visitor_closed); it accepts no more events", i, e.ConversationId)
		}
	}
	f.calls++
	out := make([]*ingestv1.EventResult, len(events))
	for i, e := range events {
		id := eventbus.ClientEventID(tenant, e.ConversationId, e.ClientEventId)
		if seq, ok := f.stored[id]; ok {
			out[i] = &ingestv1.EventResult{EventId: id, StreamSequence: seq, Duplicate: true}
			continue
		}
		k := tenant + "/" + e.ConversationId
		n, _ := strconv.Atoi(strings.TrimPrefix(e.ClientEventId, "e"))
		if n != f.last[k]+1 {
			f.errs = append(f.errs, fmt.Sprintf("%s: event %d after %d", k, n, f.last[k]))
		}
		f.last[k] = n
		f.seq++
		f.stored[id] = f.seq
		out[i] = &ingestv1.EventResult{EventId: id, StreamSequence: f.seq}
		if f.endOnClose && e.GetConversationClosed() != nil {
			f.ended[k] = true
		}
	}
	if f.failNth > 0 && f.calls%f.failNth == 0 {
		return nil, status.Error(codes.Unavailable, "event log did not confirm in time")
	}
	return out, nil
}

func (f *fakeIngest) Append(ctx context.Context, req *ingestv1.AppendRequest) (*ingestv1.AppendResponse, error) {
	res, err := f.appendBatch(ctx, req.Events)
	if err != nil {
		return nil, err
	}
	return &ingestv1.AppendResponse{Results: res}, nil
}

func (f *fakeIngest) AppendStream(s ingestv1.IngestService_AppendStreamServer) error {
	out := &ingestv1.AppendResponse{}
	f.mu.Lock()
	f.streams++
	throttled := f.throttleNth > 0 && f.streams%f.throttleNth == 0
	f.mu.Unlock()
	for batch := 0; ; batch++ {
		req, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return s.SendAndClose(out)
		}
		if err != nil {
			return err
		}
		if throttled && batch == 1 && len(req.Events) > 0 && !f.wasThrottled(req.Events[0].GetClientEventId()) {
			st, _ := status.New(codes.ResourceExhausted, "tenant is over its ingest rate limit").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(5 * time.Millisecond)})
			return st.Err()
		}
		res, err := f.appendBatch(s.Context(), req.Events)
		if err != nil {
			return err
		}
		out.Results = append(out.Results, res...)
	}
}

func (f *fakeIngest) one(ctx context.Context, e *eventv1.Envelope) (*ingestv1.EventResult, error) {
	res, err := f.appendBatch(ctx, []*eventv1.Envelope{e})
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

func (f *fakeIngest) PostMessage(ctx context.Context, r *ingestv1.PostMessageRequest) (*ingestv1.EventResult, error) {
	return f.one(ctx, &eventv1.Envelope{ConversationId: r.ConversationId, ClientEventId: r.ClientEventId, OccurredAt: r.OccurredAt, Payload: &eventv1.Envelope_MessagePosted{MessagePosted: r.Message}})
}

func (f *fakeIngest) StartConversation(ctx context.Context, r *ingestv1.StartConversationRequest) (*ingestv1.EventResult, error) {
	return f.one(ctx, &eventv1.Envelope{ConversationId: r.ConversationId, ClientEventId: r.ClientEventId, OccurredAt: r.OccurredAt, Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: r.Conversation}})
}

func (f *fakeIngest) RecordUsage(ctx context.Context, r *ingestv1.RecordUsageRequest) (*ingestv1.EventResult, error) {
	return f.one(ctx, &eventv1.Envelope{ConversationId: r.ConversationId, ClientEventId: r.ClientEventId, OccurredAt: r.OccurredAt, Payload: &eventv1.Envelope_UsageRecorded{UsageRecorded: r.Usage}})
}

func (f *fakeIngest) CloseConversation(ctx context.Context, r *ingestv1.CloseConversationRequest) (*ingestv1.EventResult, error) {
	return f.one(ctx, &eventv1.Envelope{ConversationId: r.ConversationId, ClientEventId: r.ClientEventId, OccurredAt: r.OccurredAt, Payload: &eventv1.Envelope_ConversationClosed{ConversationClosed: r.Close}})
}

var testKeys = map[string]string{"acme": "key-acme", "globex": "key-globex"}

func keyMap() map[string]string { return map[string]string{"key-acme": "acme", "key-globex": "globex"} }

// checkRun compares the stats, the ack log and what the fake stored.
func checkRun(t *testing.T, f *fakeIngest, st Stats, log *bytes.Buffer, conversations int) {
	t.Helper()
	acks, err := ReadAcks(bytes.NewReader(log.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.errs) > 0 {
		t.Fatalf("out of order: %v", f.errs[:min(len(f.errs), 5)])
	}
	if st.Conversations != uint64(conversations) || st.Errors != 0 {
		t.Fatalf("stats: %+v", st)
	}
	// Every event is acknowledged once: a retried call's events that the
	// lost attempt had stored come back as duplicates.
	if uint64(len(acks)) != st.Acked || st.Acked != uint64(len(f.stored)) || st.Events != st.Acked {
		t.Fatalf("%d ack lines, stats %+v, %d stored", len(acks), st, len(f.stored))
	}
	convs := map[string]bool{}
	var msgs, closes, dups uint64
	for _, a := range acks {
		if seq, ok := f.stored[a.EventID]; !ok || seq != a.Seq {
			t.Fatalf("ack %+v: stored under %d (%v)", a, seq, ok)
		}
		if a.Tenant != "acme" && a.Tenant != "globex" {
			t.Fatalf("ack tenant %q", a.Tenant)
		}
		convs[a.Tenant+"/"+a.Conversation] = true
		switch a.Kind {
		case "message_posted":
			msgs++
		case "conversation_closed":
			closes++
		}
		if a.Duplicate {
			dups++
		}
	}
	if len(convs) != conversations || msgs != st.Messages || closes != st.Closes || dups != st.Duplicates {
		t.Fatalf("ack log: %d conversations, %d messages, %d closes, %d duplicates; stats %+v", len(convs), msgs, closes, dups, st)
	}
}

func TestRunModes(t *testing.T) {
	for _, mode := range []string{ModeBatch, ModeStream, ModeSingle} {
		t.Run(mode, func(t *testing.T) {
			f := newFake(keyMap())
			f.failNth = 7 // some calls are stored but not confirmed: retried, reported as duplicates
			var log bytes.Buffer
			var progress int
			n := 120
			if mode == ModeSingle {
				n = 30
			}
			st, err := Run(context.Background(), Config{IngestAddr: f.start(t), Keys: testKeys, Conversations: n, Mode: mode, BatchSize: 40,
				Concurrency: 4, Seed: 5, AckLog: &log, Progress: func(Stats) { progress++ }})
			if err != nil {
				t.Fatal(err)
			}
			checkRun(t, f, st, &log, n)
			if st.Duplicates == 0 || st.Closes == 0 || st.Messages == 0 || st.AckP50 <= 0 || st.AckP99 < st.AckP50 {
				t.Fatalf("stats: %+v", st)
			}
		})
	}
}

func TestRunSGD(t *testing.T) {
	f := newFake(keyMap())
	var log bytes.Buffer
	st, err := Run(context.Background(), Config{IngestAddr: f.start(t), Keys: testKeys, SGDDir: "testdata/sgd", Mode: ModeStream, AckLog: &log, RunID: "fx"})
	if err != nil {
		t.Fatal(err)
	}
	checkRun(t, f, st, &log, 3)
	if st.Closes != 2 {
		t.Fatalf("closes %d, want 2 (two dialogues say goodbye)", st.Closes)
	}
	if !strings.Contains(log.String(), `"conversation":"sgd-fx-1_00001"`) {
		t.Fatal("conversation ids do not follow the dialogue ids")
	}
	// Capped by Conversations.
	st, err = Run(context.Background(), Config{IngestAddr: f.start(t), Keys: testKeys, SGDDir: "testdata/sgd", Conversations: 2, RunID: "fy"})
	if err != nil || st.Conversations != 2 {
		t.Fatalf("capped replay: %+v %v", st, err)
	}
}

func TestRunRateAndDuration(t *testing.T) {
	f := newFake(keyMap())
	began := time.Now()
	st, err := Run(context.Background(), Config{IngestAddr: f.start(t), Keys: testKeys, Rate: 1000, BatchSize: 50, Duration: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(began)
	if took < 1400*time.Millisecond || took > 5*time.Second {
		t.Fatalf("ran for %s, want about 1.5s", took)
	}
	// 1.5s at 1000/s plus a burst of one batch.
	if st.Acked < 800 || st.Acked > 1600 {
		t.Fatalf("acked %d events in %s at 1000/s", st.Acked, took)
	}
}

func TestRunEndedConversation(t *testing.T) {
	f := newFake(keyMap())
	f.ended["acme/lg-t-0"] = true
	st, err := Run(context.Background(), Config{IngestAddr: f.start(t), Keys: map[string]string{"acme": "key-acme"}, Conversations: 20, RunID: "lg-t", Concurrency: 1})
	if err != nil {
		t.Fatal(err)
	}
	if st.Conversations != 19 || st.Errors == 0 || st.Acked != st.Events-st.Errors {
		t.Fatalf("stats: %+v", st)
	}
}

func TestRunRefusedKey(t *testing.T) {
	f := newFake(keyMap())
	_, err := Run(context.Background(), Config{IngestAddr: f.start(t), Keys: map[string]string{"acme": "wrong"}, Conversations: 10})
	if err == nil || !strings.Contains(err.Error(), "Unauthenticated") {
		t.Fatalf("want an Unauthenticated error, got %v", err)
	}
}

func TestConfigValidation(t *testing.T) {
	base := Config{IngestAddr: "x", Keys: testKeys}
	for name, mod := range map[string]func(*Config){
		"no addr":      func(c *Config) { c.IngestAddr = "" },
		"no keys":      func(c *Config) { c.Keys = nil },
		"bad tenant":   func(c *Config) { c.Keys = map[string]string{"a.b": "k"} },
		"bad mode":     func(c *Config) { c.Mode = "bulk" },
		"big batch":    func(c *Config) { c.BatchSize = 1001 },
		"future start": func(c *Config) { c.Start = time.Now() },
		"close > 1":    func(c *Config) { c.CloseFraction = 1.5 },
	} {
		c := base
		mod(&c)
		if err := c.fill(time.Now()); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c := base
	if err := c.fill(time.Now()); err != nil {
		t.Fatal(err)
	}
	if c.Mode != ModeBatch || c.BatchSize != 100 || c.Concurrency != 8 || c.CloseFraction != 0.7 || c.Conversations != 1000 || !strings.HasPrefix(c.RunID, "lg-") {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestHistogram(t *testing.T) {
	h := newHistogram()
	for i := 1; i <= 1000; i++ {
		h.record(time.Duration(i) * time.Millisecond)
	}
	p50, p99 := h.quantile(0.5), h.quantile(0.99)
	if p50 < 480*time.Millisecond || p50 > 530*time.Millisecond || p99 < 970*time.Millisecond || p99 > 1040*time.Millisecond {
		t.Fatalf("p50 %s p99 %s", p50, p99)
	}
	if newHistogram().quantile(0.5) != 0 {
		t.Fatal("empty histogram")
	}
}

func TestReadAcks(t *testing.T) {
	in := `{"tenant":"a","conversation":"c","event_id":"e","kind":"message_posted","seq":3,"duplicate":true}

{"tenant":"a","conversation":"c","event_id":"f","kind":"conversation_closed","seq":4,"duplicate":false}
`
	acks, err := ReadAcks(strings.NewReader(in))
	if err != nil || len(acks) != 2 || !acks[0].Duplicate || acks[1].Seq != 4 {
		t.Fatalf("%+v %v", acks, err)
	}
	if _, err := ReadAcks(strings.NewReader("{\"tenant\":\"a\"}\n")); err == nil {
		t.Fatal("incomplete line accepted")
	}
	if _, err := ReadAcks(strings.NewReader("nope\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("bad line: %v", err)
	}
}

func TestRunUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second) // instead of the 5s preflight
	defer cancel()
	_, err = Run(ctx, Config{IngestAddr: addr, Keys: testKeys, Conversations: 5})
	if err == nil || !strings.Contains(err.Error(), "not reachable") || time.Since(began) > 3*time.Second {
		t.Fatalf("after %s: %v", time.Since(began), err)
	}
}

// TestRunStreamThrottled: streams cut short by the rate limit are resent
// whole; because closes travel only in a stream's last request, no resent
// stream meets a conversation that an earlier attempt ended.
func TestRunStreamThrottled(t *testing.T) {
	f := newFake(keyMap())
	f.endOnClose, f.throttleNth = true, 4
	var log bytes.Buffer
	var errs []error
	var mu sync.Mutex
	st, err := Run(context.Background(), Config{IngestAddr: f.start(t), Keys: testKeys, Conversations: 80, Mode: ModeStream, BatchSize: 20,
		Concurrency: 4, Seed: 8, AckLog: &log, OnError: func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) > 0 {
		t.Fatalf("%d calls failed, first: %v", len(errs), errs[0])
	}
	checkRun(t, f, st, &log, 80)
	if st.Duplicates == 0 || st.Closes == 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestRunOutcomeUnknownAfterEnd: a batch stored but not confirmed whose
// close ended a conversation cannot be resent for that conversation; its
// events count as errors (outcome unknown), the rest go through.
func TestRunOutcomeUnknownAfterEnd(t *testing.T) {
	f := newFake(keyMap())
	f.endOnClose, f.failNth = true, 4
	var reported int
	var mu sync.Mutex
	st, err := Run(context.Background(), Config{IngestAddr: f.start(t), Keys: testKeys, Conversations: 100, BatchSize: 30, Concurrency: 3, Seed: 4,
		OnError: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			reported++
			if !strings.Contains(err.Error(), "outcome unknown") {
				t.Errorf("unexpected error: %v", err)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Errors == 0 || reported == 0 || st.Acked+st.Errors != st.Events || st.Conversations == 100 {
		t.Fatalf("stats %+v, %d reported", st, reported)
	}
}
