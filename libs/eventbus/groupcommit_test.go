package eventbus_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
)

// TestGroupCommitConcurrentCallers checks that events of many concurrent
// callers are stored exactly once, each caller's events contiguous and in
// order, and every caller told its own sequences.
func TestGroupCommitConcurrentCallers(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	g := eventbus.NewGroupCommitter(b, eventbus.GroupCommitOptions{MaxEvents: 50, MaxInFlight: 3})
	t.Cleanup(g.Close)
	ctx := context.Background()

	const callers, perCaller = 40, 7
	var wg sync.WaitGroup
	results := make([][]eventbus.PubAck, callers)
	sent := make([][]*eventv1.Envelope, callers)
	errs := make([]error, callers)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			envs := make([]*eventv1.Envelope, perCaller)
			for i := range envs {
				envs[i] = message(fmt.Sprintf("conv-%d", c), eventbus.NewEventID(), fmt.Sprintf("caller %d message %d", c, i))
			}
			sent[c] = envs
			results[c], errs[c] = g.Append(ctx, envs)
		}()
	}
	wg.Wait()
	seen := map[uint64]bool{}
	for c := range callers {
		if errs[c] != nil {
			t.Fatalf("caller %d: %v", c, errs[c])
		}
		if len(results[c]) != perCaller {
			t.Fatalf("caller %d: %d acks, want %d", c, len(results[c]), perCaller)
		}
		for i, a := range results[c] {
			if a.Duplicate || seen[a.Sequence] {
				t.Fatalf("caller %d event %d: ack %+v duplicate or sequence reused", c, i, a)
			}
			seen[a.Sequence] = true
			if i > 0 && a.Sequence != results[c][i-1].Sequence+1 {
				t.Fatalf("caller %d: sequences not contiguous: %v", c, results[c])
			}
			// The stored message at that sequence is this caller's event.
			raw, err := b.JetStream().Stream(ctx, eventbus.ConvStream)
			if err != nil {
				t.Fatal(err)
			}
			m, err := raw.GetMsg(ctx, a.Sequence)
			if err != nil {
				t.Fatal(err)
			}
			var got eventv1.Envelope
			if err := proto.Unmarshal(m.Data, &got); err != nil {
				t.Fatal(err)
			}
			if got.EventId != sent[c][i].EventId || m.Header.Get("Nats-Msg-Id") != "acme/"+got.EventId {
				t.Fatalf("seq %d holds %s (msg id %s), want %s", a.Sequence, got.EventId, m.Header.Get("Nats-Msg-Id"), sent[c][i].EventId)
			}
		}
	}
	if got := streamMsgs(t, b); got != callers*perCaller {
		t.Fatalf("stream holds %d messages, want %d", got, callers*perCaller)
	}
}

// TestGroupCommitRetriesAreDuplicates checks that a batch mixing stored and
// new event ids (a client retry after a partial outage) stores only the new
// ones and reports the others as duplicates with their original sequences.
func TestGroupCommitRetriesAreDuplicates(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	g := eventbus.NewGroupCommitter(b, eventbus.GroupCommitOptions{})
	t.Cleanup(g.Close)
	ctx := context.Background()

	old := []*eventv1.Envelope{message("c1", eventbus.NewEventID(), "a"), message("c1", eventbus.NewEventID(), "b")}
	first, err := g.Append(ctx, old)
	if err != nil {
		t.Fatal(err)
	}
	retry := []*eventv1.Envelope{
		message("c1", old[0].EventId, "a"),
		message("c1", eventbus.NewEventID(), "c"),
		message("c1", old[1].EventId, "b"),
	}
	acks, err := g.Append(ctx, retry)
	if err != nil {
		t.Fatal(err)
	}
	if !acks[0].Duplicate || acks[0].Sequence != first[0].Sequence || acks[1].Duplicate || !acks[2].Duplicate || acks[2].Sequence != first[1].Sequence {
		t.Fatalf("retry acks %+v (first %+v)", acks, first)
	}
	// The same id twice inside one request is stored once.
	twice := eventbus.NewEventID()
	acks, err = g.Append(ctx, []*eventv1.Envelope{message("c2", twice, "x"), message("c2", twice, "x")})
	if err != nil {
		t.Fatal(err)
	}
	if acks[0].Duplicate || !acks[1].Duplicate || acks[0].Sequence != acks[1].Sequence {
		t.Fatalf("same id twice: %+v", acks)
	}
	if got := streamMsgs(t, b); got != 4 {
		t.Fatalf("stream holds %d messages, want 4", got)
	}
}

// TestGroupCommitSplitsOversizedRequests checks a request larger than one
// atomic batch.
func TestGroupCommitSplitsOversizedRequests(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	g := eventbus.NewGroupCommitter(b, eventbus.GroupCommitOptions{MaxEvents: 10})
	t.Cleanup(g.Close)
	envs := make([]*eventv1.Envelope, 25)
	for i := range envs {
		envs[i] = message("big", eventbus.NewEventID(), "x")
	}
	acks, err := g.Append(context.Background(), envs)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(acks); i++ {
		if acks[i].Sequence != acks[i-1].Sequence+1 {
			t.Fatalf("acks not in order: %+v", acks)
		}
	}
	if got := streamMsgs(t, b); got != 25 {
		t.Fatalf("stream holds %d, want 25", got)
	}
}

// TestGroupCommitOutageIsUnavailable checks that appends fail fast with
// ErrUnavailable while NATS is down and succeed after it returns.
func TestGroupCommitOutageIsUnavailable(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	g := eventbus.NewGroupCommitter(b, eventbus.GroupCommitOptions{})
	t.Cleanup(g.Close)
	ctx := context.Background()
	n.Shutdown()
	_, err := g.Append(ctx, []*eventv1.Envelope{message("c1", eventbus.NewEventID(), "a"), message("c1", eventbus.NewEventID(), "b")})
	if !errors.Is(err, eventbus.ErrUnavailable) {
		t.Fatalf("append during outage: want ErrUnavailable, got %v", err)
	}
	n.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = g.Append(ctx, []*eventv1.Envelope{message("c1", eventbus.NewEventID(), "a"), message("c1", eventbus.NewEventID(), "b")})
		if err == nil {
			break
		}
		if !errors.Is(err, eventbus.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("append after restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func streamMsgs(t *testing.T, b *eventbus.Bus) uint64 {
	t.Helper()
	s, err := b.JetStream().Stream(context.Background(), eventbus.ConvStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// In pipelined mode, concurrent 1000-event requests (more unacknowledged
// publishes than the client's default limit of 4,000) are all stored, even
// when the server is slow to acknowledge (here: it syncs every write).
func TestGroupCommitPipelinedBackpressure(t *testing.T) {
	n := testenv.NATSWithSync(t, true)
	b, err := eventbus.Connect(context.Background(), n.URL, "test", eventbus.Options{Producer: "test", PublishTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := b.EnsureStreams(context.Background()); err != nil {
		t.Fatal(err)
	}
	g := eventbus.NewGroupCommitter(b, eventbus.GroupCommitOptions{Mode: eventbus.CommitPipelined, MaxEvents: 1000, MaxInFlight: 8})
	t.Cleanup(g.Close)
	ctx := context.Background()
	const callers, perCaller = 12, 1000
	var wg sync.WaitGroup
	errs := make([]error, callers)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			envs := make([]*eventv1.Envelope, perCaller)
			for i := range envs {
				envs[i] = message(fmt.Sprintf("conv-%d-%d", c, i%50), eventbus.NewEventID(), "where is my order?")
			}
			_, errs[c] = g.Append(ctx, envs)
		}()
	}
	wg.Wait()
	for c, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", c, err)
		}
	}
	if got := streamMsgs(t, b); got != callers*perCaller {
		t.Fatalf("stream holds %d messages, want %d", got, callers*perCaller)
	}
}
