package eventbus_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
)

// testMaxPayload is the max_payload of the servers these tests start.
const testMaxPayload = 16 << 10

// smallPayloadNATS starts an embedded JetStream server with a max_payload of
// testMaxPayload and returns its URL.
func smallPayloadNATS(t *testing.T) string {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoSigs: true, NoLog: true,
		MaxPayload: testMaxPayload,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s.ClientURL()
}

func posted(tenant, conv, text string) *eventv1.Envelope {
	env := message(conv, eventbus.NewEventID(), text)
	env.TenantId = tenant
	return env
}

// storedSubjects maps the event id of every envelope in PARLEY_CONV to its
// subject.
func storedSubjects(t *testing.T, b *eventbus.Bus) map[string]string {
	t.Helper()
	ctx := context.Background()
	st, err := b.JetStream().Stream(ctx, eventbus.ConvStream)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for seq := uint64(1); ; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		env := &eventv1.Envelope{}
		if err := proto.Unmarshal(m.Data, env); err != nil {
			t.Fatal(err)
		}
		out[env.EventId] = m.Subject
	}
}

// TestRefusedRequestFailsAlone commits two tenants' requests together in one
// atomic batch where the server refuses one tenant's event: over the
// connection's max_payload (refused on publish), or over the stream's
// max_msg_size (refused at the batch's commit). The other tenant's request
// must be stored and acknowledged; only the refused request fails.
func TestRefusedRequestFailsAlone(t *testing.T) {
	for _, c := range []struct {
		name    string
		limit   func(t *testing.T, b *eventbus.Bus)
		bigText int
	}{
		{name: "max_payload", bigText: testMaxPayload + 1024},
		{name: "stream max_msg_size", bigText: 8 << 10, limit: func(t *testing.T, b *eventbus.Bus) {
			ctx := context.Background()
			st, err := b.JetStream().Stream(ctx, eventbus.ConvStream)
			if err != nil {
				t.Fatal(err)
			}
			cfg := st.CachedInfo().Config
			cfg.MaxMsgSize = 4 << 10
			if _, err := b.JetStream().UpdateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newBus(t, smallPayloadNATS(t))
			if c.limit != nil {
				c.limit(t, b)
			}
			g := eventbus.NewGroupCommitter(b, eventbus.GroupCommitOptions{})
			t.Cleanup(g.Close)
			good := []*eventv1.Envelope{posted("tenant-a", "c1", "hello"), posted("tenant-a", "c1", "again")}
			bad := []*eventv1.Envelope{posted("tenant-b", "c9", "fine"), posted("tenant-b", "c9", strings.Repeat("x", c.bigText))}
			acks, errs := eventbus.CommitTogether(context.Background(), g, good, bad)
			if errs[0] != nil || len(acks[0]) != 2 || acks[0][0].Duplicate || acks[0][1].Sequence != acks[0][0].Sequence+1 {
				t.Fatalf("tenant-a's request: acks %v, err %v; want stored", acks[0], errs[0])
			}
			if errs[1] == nil {
				t.Fatalf("tenant-b's request: acks %v; want refused", acks[1])
			}
			stored := storedSubjects(t, b)
			const subject = "parley.conv.v1.tenant-a.c1.message_posted"
			if len(stored) != 2 || stored[good[0].EventId] != subject || stored[good[1].EventId] != subject {
				t.Fatalf("stream holds %v, want tenant-a's 2 events", stored)
			}
		})
	}
}

// TestAppendRefusesEventOverMaxPayload appends two tenants' requests at once
// on a server with a small max_payload, one of them holding an oversize
// event: that request is refused before batching with a *TooLargeError
// naming the event, and the other is stored.
func TestAppendRefusesEventOverMaxPayload(t *testing.T) {
	b := newBus(t, smallPayloadNATS(t))
	if b.MaxPayload() != testMaxPayload {
		t.Fatalf("MaxPayload %d, want %d", b.MaxPayload(), testMaxPayload)
	}
	g := eventbus.NewGroupCommitter(b, eventbus.GroupCommitOptions{MaxInFlight: 1})
	t.Cleanup(g.Close)
	ctx := context.Background()
	small := []*eventv1.Envelope{posted("tenant-a", "c1", "hello")}
	big := []*eventv1.Envelope{posted("tenant-b", "c9", "fine"), posted("tenant-b", "c9", strings.Repeat("x", testMaxPayload))}
	var wg sync.WaitGroup
	var smallAcks []eventbus.PubAck
	var smallErr, bigErr error
	wg.Add(2)
	go func() { defer wg.Done(); smallAcks, smallErr = g.Append(ctx, small) }()
	go func() { defer wg.Done(); _, bigErr = g.Append(ctx, big) }()
	wg.Wait()
	if smallErr != nil || len(smallAcks) != 1 {
		t.Fatalf("tenant-a: %v %v", smallAcks, smallErr)
	}
	var tooLarge *eventbus.TooLargeError
	if !errors.As(bigErr, &tooLarge) || tooLarge.Index != 1 || tooLarge.Max != testMaxPayload || tooLarge.Size <= testMaxPayload {
		t.Fatalf("tenant-b: want *TooLargeError for event 1, got %v", bigErr)
	}
	if stored := storedSubjects(t, b); len(stored) != 1 || stored[small[0].EventId] == "" {
		t.Fatalf("stream holds %v, want only tenant-a's event", stored)
	}
	// An event within 200 bytes of the limit is stored (Append's message
	// also carries a traceparent header, about 70 bytes).
	fit := posted("tenant-c", "c1", "")
	fit.GetMessagePosted().Text = strings.Repeat("y", testMaxPayload-eventbus.BatchedSize(b, fit)-200)
	if _, err := g.Append(ctx, []*eventv1.Envelope{fit, posted("tenant-c", "c1", "after")}); err != nil {
		t.Fatalf("an event just under max_payload: %v", err)
	}
}
