package tagging_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/partition/partitiontest"
	"github.com/parley-dev/parley/libs/testsvc"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/tagging"
	"github.com/parley-dev/parley/services/tagging/internal/store"
)

// fiveRule tags a conversation once it holds five visitor messages: a
// skipped message leaves it untagged.
const fiveRule = "conversation.visitor_messages >= 5"

// conversation returns a started conversation with n visitor messages.
func conversation(id string, n int) []*eventv1.Envelope {
	cv := evtest.New("acme", id)
	out := []*eventv1.Envelope{cv.Started("support")}
	for i := range n {
		out = append(out, cv.Visitor(fmt.Sprintf("question number %d", i)))
	}
	return out
}

// publishConversations publishes conversations prefix+from .. prefix+to-1
// with five visitor messages each and returns their ids.
func (f *fixture) publishConversations(prefix string, from, to int) []string {
	var ids []string
	for i := from; i < to; i++ {
		id := fmt.Sprintf("%s%02d", prefix, i)
		f.publish(conversation(id, 5)...)
		ids = append(ids, id)
	}
	return ids
}

// waitFor polls cond for up to 30s.
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

// visitorMessages is the stored visitor message count of an acme
// conversation (-1: no state).
func (f *fixture) visitorMessages(conv string) int {
	f.t.Helper()
	st, err := store.New(f.pool).ConversationState(context.Background(), "acme", conv)
	if err != nil || st == nil || st.Facts == nil {
		return -1
	}
	return int(st.Facts.GetVisitorMessages())
}

// tagged counts acme's tag_applied events per conversation for tag.
func (f *fixture) tagged(tag string) map[string]int {
	out := map[string]int{}
	for _, e := range f.events("acme") {
		if ta := e.GetTagApplied(); ta != nil && ta.Tag == tag {
			out[e.ConversationId]++
		}
	}
	return out
}

// assertExact checks that each conversation holds n visitor messages and
// carries the "five" tag exactly once, and that nothing is dead-lettered.
func (f *fixture) assertExact(ids []string, n int) {
	f.t.Helper()
	tags := f.tagged("five")
	for _, id := range ids {
		if got := f.visitorMessages(id); got != n || tags[id] != 1 {
			f.t.Fatalf("%s: %d visitor messages (want %d), tagged %d times", id, got, n, tags[id])
		}
	}
	if d := partitiontest.DeadLetters(f.t, f.js, "tagging"); len(d) != 0 {
		f.t.Fatalf("dead letters: %v", d)
	}
}

// A store hiccup while one event is in flight and later events of its
// conversation are in the log: the old durable consumer applied the later
// ones and skipped the redelivered event as already applied (4 of 5
// messages, no tag); the partitioned consumer pauses and resumes from its
// stored position, so every event is applied in order.
func TestLateRedeliveryIsApplied(t *testing.T) {
	victim := &atomic.Value{}
	victim.Store("")
	var failed atomic.Int32
	f := start(t, func(c *tagging.Config) {
		c.Wrap = partitiontest.FailOn(func() string { return victim.Load().(string) }, errors.New("connection reset by peer"), partitiontest.FailFor(500*time.Millisecond, &failed))
	})
	f.createRule("acme", "five", fiveRule, "five")
	c00 := conversation("c00", 5)
	victim.Store(c00[2].GetEventId())
	f.publish(c00...)
	ids := append([]string{"c00"}, f.publishConversations("c", 1, 10)...)
	f.settle()
	if failed.Load() == 0 {
		t.Fatal("the fault was not injected")
	}
	f.assertExact(ids, 5)
}

// One event refused permanently: it is dead-lettered with its reason, the
// later events of its conversation are held (dead-lettered, not applied
// around it), other conversations are applied.
func TestPermanentFailureHoldsTheConversation(t *testing.T) {
	poison := &atomic.Value{}
	poison.Store("")
	f := start(t, func(c *tagging.Config) {
		c.Wrap = partitiontest.FailOn(func() string { return poison.Load().(string) }, eventbus.Permanent(errors.New("refused: test poison")), func() bool { return true })
	})
	f.createRule("acme", "five", fiveRule, "five")
	held := conversation("p00", 5)
	poison.Store(held[2].GetEventId())
	f.publish(held...)
	ids := f.publishConversations("p", 1, 10)
	f.settle()
	d := partitiontest.DeadLetters(f.t, f.js, "tagging")
	if d[held[2].GetEventId()] != "refused: test poison" {
		t.Fatalf("poison not dead-lettered with its reason: %v", d)
	}
	for _, e := range held[3:] {
		if d[e.GetEventId()] == "" {
			t.Fatalf("later event %s of the held conversation not dead-lettered: %v", e.GetEventId(), d)
		}
	}
	if len(d) != 4 {
		t.Fatalf("dead letters: %v", d)
	}
	if n := f.visitorMessages("p00"); n != 1 {
		t.Fatalf("held conversation: %d visitor messages, want the 1 before the poison", n)
	}
	var blocked int64
	if err := f.pool.QueryRow(context.Background(), `SELECT blocked_seq FROM partition_held
		WHERE consumer = 'tagging' AND tenant_id = 'acme' AND conversation_id = 'p00'`).Scan(&blocked); err != nil {
		t.Fatalf("hold not recorded: %v", err)
	}
	tags := f.tagged("five")
	for _, id := range ids {
		if n := f.visitorMessages(id); n != 5 || tags[id] != 1 {
			t.Fatalf("%s: %d visitor messages, tagged %d times", id, n, tags[id])
		}
	}
}

// PostgreSQL unreachable for a while: live tagging pauses (not ready),
// nothing is dead-lettered, and once the database is back every event is
// applied exactly.
func TestStoreOutagePauses(t *testing.T) {
	var proxy *testsvc.FlakyProxy
	f := start(t, func(c *tagging.Config) {
		u, err := url.Parse(c.Postgres.URL)
		if err != nil {
			t.Fatal(err)
		}
		proxy = testsvc.StartFlakyProxy(t, u.Host)
		u.Host = proxy.Addr()
		c.Postgres.URL = u.String()
	})
	f.createRule("acme", "five", fiveRule, "five")
	ids := f.publishConversations("o", 0, 5)
	f.settle()
	proxy.SetDown(true)
	ids = append(ids, f.publishConversations("o", 5, 15)...)
	f.waitFor("the consumer's readiness check to fail", func() bool { return !testsvc.CheckReady(f.admin, "consumer") })
	time.Sleep(2 * time.Second) // the outage lasts
	proxy.SetDown(false)
	f.waitFor("readiness back", func() bool { return testsvc.CheckReady(f.admin, "consumer") })
	f.settle()
	f.assertExact(ids, 5)
}

// Two replicas divide the partitions; one dies without releasing its
// leases, its partitions move to the survivor within seconds, and every
// conversation is tagged exactly (each replica also relays outbox rows of
// any conversation: deterministic ids keep each event stored once).
func TestTwoReplicasDividePartitions(t *testing.T) {
	const ttl = 2 * time.Second
	f := start(t, func(c *tagging.Config) { c.Member, c.LeaseTTL, c.KeepLeases = "a", ttl, true })
	cfg := f.cfg
	cfg.Member, cfg.LeaseTTL, cfg.KeepLeases = "b", ttl, false
	cfg.GRPCAddr, cfg.AdminAddr = testsvc.Addrs(t)
	runService(t, cfg)
	half := partition.DefaultPartitions / 2
	f.waitFor("both replicas hold partitions", func() bool {
		o := partitiontest.Owners(f.t, f.pool, "tagging")
		return o["a"] == half && o["b"] == half
	})
	f.createRule("acme", "five", fiveRule, "five")
	ids := f.publishConversations("r", 0, 20)
	f.settle()
	f.stop() // leases kept, as by a crash
	killed := time.Now()
	ids = append(ids, f.publishConversations("r", 20, 40)...)
	f.waitFor("the survivor holds every partition", func() bool { return partitiontest.Owners(f.t, f.pool, "tagging")["b"] == partition.DefaultPartitions })
	if d := time.Since(killed); d > 3*ttl {
		t.Fatalf("takeover took %v", d)
	}
	f.settle()
	f.assertExact(ids, 5)
}

// A PostgreSQL data error (SQLSTATE class 22) while storing one
// conversation is permanent: its events are dead-lettered at once (the
// first with the error, the rest as held), not retried, and the others
// are applied.
func TestStoreDataErrorIsPermanent(t *testing.T) {
	f := start(t)
	f.createRule("acme", "five", fiveRule, "five")
	if _, err := f.pool.Exec(context.Background(), `CREATE FUNCTION refuse_bad() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN IF NEW.conversation_id = 'bad' THEN RAISE EXCEPTION 'refused' USING ERRCODE = '22023'; END IF; RETURN NEW; END $$;
		CREATE TRIGGER refuse_bad BEFORE INSERT OR UPDATE ON tagging_conversations FOR EACH ROW EXECUTE FUNCTION refuse_bad()`); err != nil {
		t.Fatal(err)
	}
	bad := conversation("bad", 5)
	f.publish(bad...)
	ids := f.publishConversations("d", 0, 5)
	f.settle()
	d := partitiontest.DeadLetters(f.t, f.js, "tagging")
	if len(d) != len(bad) {
		t.Fatalf("dead letters: %v", d)
	}
	for _, e := range bad {
		if d[e.GetEventId()] == "" {
			t.Fatalf("%s not dead-lettered: %v", e.GetEventId(), d)
		}
	}
	tags := f.tagged("five")
	for _, id := range ids {
		if n := f.visitorMessages(id); n != 5 || tags[id] != 1 {
			t.Fatalf("%s: %d visitor messages, tagged %d times", id, n, tags[id])
		}
	}
}
