package outbox_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/convview"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/lifecycle/internal/machine"
	"github.com/parley-dev/parley/services/lifecycle/internal/outbox"
	"github.com/parley-dev/parley/services/lifecycle/internal/store"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type env struct {
	t     *testing.T
	nats  *testenv.NATSServer
	bus   *eventbus.Bus
	st    *store.Store
	relay *outbox.Relay
	view  jetstream.KeyValue
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	n := testenv.NATS(t)
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t), MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool, nil); err != nil {
		t.Fatal(err)
	}
	bus, err := eventbus.Connect(ctx, n.URL, "test-lifecycle", eventbus.Options{Producer: "lifecycle", PublishTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	kv, err := convview.Ensure(ctx, bus, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	st := store.New(pool, time.Hour)
	relay := outbox.New(outbox.Config{Store: st, Bus: bus, View: convview.NewWriter(kv), DuplicateWindow: 2 * time.Minute,
		ViewTTL: convview.DefaultTTL, PublishTimeout: time.Second, Log: testenv.Telemetry(t, "lifecycle").Logger})
	return &env{t: t, nats: n, bus: bus, st: st, relay: relay, view: kv}
}

// end returns the outbox rows of ending conversation conv (closed by the
// visitor): conversation_ended with the view entry, engagement_classified.
func (e *env) end(conv string) []store.OutboxRow {
	e.t.Helper()
	now := time.Now().UTC().Truncate(time.Microsecond)
	st := machine.State{TenantID: "acme", ConversationID: conv, Status: machine.StatusActive, StartedAt: now.Add(-time.Minute), LastActivityAt: now}
	after, out, ok := machine.End(st, machine.EndCommand{Reason: eventv1.EndReason_END_REASON_VISITOR_CLOSED, At: now}, now)
	if !ok {
		e.t.Fatal("not ended")
	}
	rows, err := outbox.Rows(after, out, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return rows
}

func (e *env) save(rows []store.OutboxRow) {
	e.t.Helper()
	if err := e.st.Tx(context.Background(), func(tx pgx.Tx) error {
		return e.st.Save(context.Background(), tx, store.Change{Outbox: rows})
	}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) pending() []store.OutboxRow {
	e.t.Helper()
	rows, err := e.st.PendingOutbox(context.Background(), 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	return rows
}

// stored returns the event ids on conv's subjects in stream order.
func (e *env) stored(conv string) []string {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.bus.JetStream().Stream(ctx, eventbus.ConvStream)
	if err != nil {
		e.t.Fatal(err)
	}
	var ids []string
	subject := eventbus.ConvSubject("acme", conv, "*")
	for seq := uint64(1); ; {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return ids
		}
		if err != nil {
			e.t.Fatal(err)
		}
		// The deduplication key names the tenant (eventbus.MsgID).
		id, ok := strings.CutPrefix(m.Header.Get(jetstream.MsgIDHeader), "acme/")
		if !ok {
			e.t.Fatalf("seq %d: Nats-Msg-Id %q does not name the tenant", m.Sequence, m.Header.Get(jetstream.MsgIDHeader))
		}
		ids = append(ids, id)
		seq = m.Sequence + 1
	}
}

func (e *env) inView(conv string) bool {
	_, err := e.view.Get(context.Background(), convview.Key("acme", conv))
	return err == nil
}

func ids(rows []store.OutboxRow) []string {
	var out []string
	for _, r := range rows {
		if r.EventID != "" {
			out = append(out, r.EventID)
		}
	}
	return out
}

func TestDrainPublishesEachConversationInOrder(t *testing.T) {
	e := newEnv(t)
	var all []store.OutboxRow
	want := map[string][]string{}
	for _, conv := range []string{"a", "b", "c"} {
		rows := e.end(conv)
		want[conv] = ids(rows)
		all = append(all, rows...)
	}
	// Interleave: a's, b's and c's rows alternate in id order.
	e.save([]store.OutboxRow{all[0], all[2], all[4], all[1], all[3], all[5]})
	if err := e.relay.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(e.pending()); n != 0 {
		t.Fatalf("%d rows left", n)
	}
	for conv, ids := range want {
		if got := e.stored(conv); len(got) != 2 || got[0] != ids[0] || got[1] != ids[1] {
			t.Fatalf("%s: stored %v, want %v", conv, got, ids)
		}
		if !e.inView(conv) {
			t.Fatalf("%s: not in the ended view", conv)
		}
	}

	// Rows published but not deleted (a crash in between) are published
	// again without a second copy: conversation_ended and
	// engagement_classified because their subject is taken, whatever the
	// duplicate window.
	e.save(all)
	if err := e.relay.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	for conv := range want {
		if got := e.stored(conv); len(got) != 2 {
			t.Fatalf("%s: stored %v after a repeated drain", conv, got)
		}
	}
	if n := len(e.pending()); n != 0 {
		t.Fatalf("%d rows left", n)
	}
}

func TestDrainStopsAConversationAtItsFailedRow(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a, b := e.end("a"), e.end("b")
	// a's conversation_ended cannot be published (no event id: invalid).
	bad := &eventv1.Envelope{}
	if err := proto.Unmarshal(a[0].Envelope, bad); err != nil {
		t.Fatal(err)
	}
	bad.EventId = ""
	good := a[0].Envelope
	a[0].Envelope, _ = proto.Marshal(bad)
	e.save([]store.OutboxRow{a[0], b[0], a[1], b[1]})
	if err := e.relay.Drain(ctx); err == nil {
		t.Fatal("drain reported no failure")
	}
	if got := e.stored("b"); len(got) != 2 || !e.inView("b") {
		t.Fatalf("b is held up by a's failure: stored %v", got)
	}
	if got := e.stored("a"); len(got) != 0 || e.inView("a") {
		t.Fatalf("a: stored %v after its first row failed", got)
	}
	left := e.pending()
	if len(left) != 2 || left[0].EventID != a[0].EventID || left[1].EventID != a[1].EventID {
		t.Fatalf("left in the outbox: %+v", left)
	}

	// Once the row can be published, a's rows follow in order.
	if err := e.st.DeleteOutbox(ctx, []int64{left[0].ID, left[1].ID}); err != nil {
		t.Fatal(err)
	}
	a[0].Envelope = good
	e.save(a)
	if err := e.relay.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.stored("a"); len(got) != 2 || got[0] != a[0].EventID || got[1] != a[1].EventID || !e.inView("a") {
		t.Fatalf("a: stored %v", got)
	}
}

func TestDrainKeepsRowsWhileNATSIsDown(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rows := e.end("a")
	e.save(rows)
	e.nats.Shutdown()
	if err := e.relay.Drain(ctx); err == nil {
		t.Fatal("drain reported no failure")
	}
	if n := len(e.pending()); n != len(rows) {
		t.Fatalf("%d rows left, want %d", n, len(rows))
	}
	e.nats.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := e.relay.Drain(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := e.stored("a"); len(got) != 2 || got[0] != rows[0].EventID || !e.inView("a") {
		t.Fatalf("stored %v", got)
	}
}

// late_event_recorded is stored once when published again: by its id
// (JetStream's duplicate window, also when it arrives in an atomic batch),
// or, when its cause is older than half the window, by a look-up.
func TestLateEventRecordedOnce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	now := time.Now().UTC()
	var rows []store.OutboxRow
	for conv, recorded := range map[string]time.Time{"recent1": now, "recent2": now, "old1": now.Add(-time.Hour), "old2": now.Add(-time.Hour)} {
		late := &eventv1.Envelope{
			EventId: eventbus.NewEventID(), TenantId: "acme", ConversationId: conv, OccurredAt: timestamppb.New(now), RecordedAt: timestamppb.New(recorded),
			Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: "late"}},
		}
		st := machine.State{TenantID: "acme", ConversationID: conv, Status: machine.StatusEnded, EndSeq: 1, StartedAt: now, LastActivityAt: now, EndedAt: now}
		_, out := machine.Apply(st, machine.Event{Envelope: late, Seq: 2}, now)
		r, err := outbox.Rows(st, out, late)
		if err != nil || len(r) != 1 || r[0].Kind != "late_event_recorded" {
			t.Fatalf("rows %+v %v", r, err)
		}
		rows = append(rows, r...)
	}
	for range 2 {
		e.save(rows)
		if err := e.relay.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		if n := len(e.pending()); n != 0 {
			t.Fatalf("%d rows left", n)
		}
	}
	for _, conv := range []string{"recent1", "recent2", "old1", "old2"} {
		if got := e.stored(conv); len(got) != 1 {
			t.Fatalf("%s: stored %v", conv, got)
		}
	}
}
