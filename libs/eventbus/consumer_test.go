package eventbus_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/testenv"
	"google.golang.org/protobuf/proto"
)

// TestEnvelopeNotMatchingItsSubjectIsDeadLettered publishes raw messages
// onto tenant victim's subjects whose envelopes claim another tenant or
// another conversation: the handler never sees them, they are in PARLEY_DLQ
// with the reason, and the events around them are handled.
func TestEnvelopeNotMatchingItsSubjectIsDeadLettered(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	ctx := context.Background()
	raw := func(subject, tenant, conv string) string {
		env := message(conv, eventbus.NewEventID(), "forged")
		env.TenantId, env.Kind = tenant, "message_posted"
		data, err := proto.Marshal(env)
		if err != nil {
			t.Fatal(err)
		}
		m := nats.NewMsg(subject)
		m.Data = data
		if _, err := b.JetStream().PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
		return env.EventId
	}
	good := message("c1", eventbus.NewEventID(), "genuine")
	good.TenantId = "victim"
	if _, err := b.Publish(ctx, good); err != nil {
		t.Fatal(err)
	}
	forged := map[string]bool{
		raw("parley.conv.v1.victim.c1.message_posted", "attacker", "c1"): true, // another tenant
		raw("parley.conv.v1.victim.c1.message_posted", "victim", "c2"):   true, // another conversation
		raw("parley.conv.v1.victim.c1", "victim", "c1"):                  true, // not a conversation subject
	}
	last := message("c1", eventbus.NewEventID(), "genuine too")
	last.TenantId = "victim"
	if _, err := b.Publish(ctx, last); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	var seen []string
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(cctx, eventbus.ConsumerConfig{Durable: "tenantcheck", BatchSize: 10, MaxWait: 50 * time.Millisecond},
			func(_ context.Context, batch []*eventbus.Delivery) error {
				mu.Lock()
				defer mu.Unlock()
				for _, d := range batch {
					seen = append(seen, d.Envelope.EventId)
				}
				if len(seen) >= 2 {
					cancel()
				}
				return nil
			})
	}()
	waitDone(t, done)
	if len(seen) != 2 || seen[0] != good.EventId || seen[1] != last.EventId {
		t.Fatalf("handler saw %v, want only %s and %s", seen, good.EventId, last.EventId)
	}
	deadline := time.Now().Add(5 * time.Second)
	for dlqCount(t, b) < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := dlqCount(t, b); got != 3 {
		t.Fatalf("dead letters: %d, want the 3 forged events", got)
	}
	s, err := b.JetStream().Stream(ctx, eventbus.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 3; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		env := message("", "", "")
		if err := proto.Unmarshal(m.Data, env); err != nil || !forged[env.EventId] {
			t.Fatalf("dead letter %d holds %v (%v), not a forged event", seq, env, err)
		}
		if reason := m.Header.Get(eventbus.HeaderDLQError); !strings.Contains(reason, "does not match its subject") &&
			!strings.Contains(reason, "is not a conversation subject") {
			t.Fatalf("dead letter %d: reason %q", seq, reason)
		}
	}
	assertPending(t, b, "tenantcheck", 0)

	// A replay (projection rebuild, backfill) skips them too.
	var replayed []string
	to, err := b.LastSequence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Replay(ctx, 1, to, 10, nil, func(_ context.Context, batch []*eventbus.Delivery) error {
		for _, d := range batch {
			replayed = append(replayed, d.Envelope.EventId)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(replayed) != 2 || replayed[0] != good.EventId || replayed[1] != last.EventId {
		t.Fatalf("replay handed over %v, want only %s and %s", replayed, good.EventId, last.EventId)
	}
}

// TestPoisonEventIsIsolatedByBisection hands the handler a batch of 64
// events, one of which it refuses for good: every other event is handled,
// the bad one is in PARLEY_DLQ with its reason, and isolating it costs
// about 2·log2(64) handler calls of shrinking halves, not 64 single-event
// calls.
func TestPoisonEventIsIsolatedByBisection(t *testing.T) {
	n := testenv.NATS(t)
	b := newBus(t, n.URL)
	ctx := context.Background()
	const total = 64
	ids := make([]string, total)
	for i := range ids {
		ids[i] = eventbus.NewEventID()
		if _, err := b.Publish(ctx, message("c"+strconv.Itoa(i%5), ids[i], "m")); err != nil {
			t.Fatal(err)
		}
	}
	poison := ids[37]

	var mu sync.Mutex
	var sizes []int
	handled := map[string]int{}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(cctx, eventbus.ConsumerConfig{Durable: "bisect", BatchSize: total, MaxWait: 2 * time.Second},
			func(_ context.Context, batch []*eventbus.Delivery) error {
				mu.Lock()
				defer mu.Unlock()
				sizes = append(sizes, len(batch))
				for _, d := range batch {
					if d.Envelope.EventId == poison {
						return eventbus.Permanent(errors.New("poison: cannot apply this event"))
					}
				}
				for _, d := range batch {
					handled[d.Envelope.EventId]++
				}
				if len(handled) == total-1 {
					cancel()
				}
				return nil
			})
	}()
	waitDone(t, done)
	if sizes[0] != total {
		t.Fatalf("first batch held %d events, want all %d", sizes[0], total)
	}
	for _, id := range ids {
		if id != poison && handled[id] != 1 {
			t.Fatalf("event %s handled %d times, want once", id, handled[id])
		}
	}
	// The whole batch, then two halves per level down to the single bad
	// event: 1 + 2·log2(64) = 13 calls; one event at a time would be 65.
	if len(sizes) != 1+2*6 {
		t.Fatalf("%d handler calls (batch sizes %v), want 13", len(sizes), sizes)
	}
	singles := 0
	for _, s := range sizes {
		if s == 1 {
			singles++
		}
	}
	if singles != 2 {
		t.Fatalf("%d single-event calls (batch sizes %v), want 2 (the bad event and its neighbour)", singles, sizes)
	}
	deadline := time.Now().Add(5 * time.Second)
	for dlqCount(t, b) < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	s, err := b.JetStream().Stream(ctx, eventbus.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(ctx, "parley.dlq.bisect")
	if err != nil {
		t.Fatal(err)
	}
	env := message("", "", "")
	if err := proto.Unmarshal(m.Data, env); err != nil || env.EventId != poison || !strings.Contains(m.Header.Get(eventbus.HeaderDLQError), "poison: cannot apply") {
		t.Fatalf("dead letter: %v (%v), reason %q", env, err, m.Header.Get(eventbus.HeaderDLQError))
	}
	if got := dlqCount(t, b); got != 1 {
		t.Fatalf("%d dead letters, want 1", got)
	}
	assertPending(t, b, "bisect", 0)
}
