package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/partition/partitiontest"
	"github.com/parley-dev/parley/libs/testsvc"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/lifecycle"
	"github.com/parley-dev/parley/services/lifecycle/internal/consumer"
)

// conversation publishes a started, n visitor messages and a visitor close
// and returns the envelopes.
func (w *world) conversation(id string, n int) []*eventv1.Envelope {
	now := w.clock.Now()
	out := []*eventv1.Envelope{w.publish("acme", id, now.Add(-3*time.Minute), started(eventv1.Channel_CHANNEL_WEB_WIDGET))}
	for i := range n {
		out = append(out, w.publish("acme", id, now.Add(-2*time.Minute+time.Duration(i)*time.Second), visitorMsg(fmt.Sprintf("message %d", i))))
	}
	return append(out, w.publish("acme", id, now.Add(-time.Minute), closedBy(eventv1.Actor_ACTOR_VISITOR)))
}

// A transient failure of one event while later events of its conversation
// are delivered: the old consumer acknowledged the later ones and skipped
// the redelivered event as late (4 of 5 messages counted); the partitioned
// consumer pauses and resumes from its stored position, so every event is
// applied, in order.
func TestTransientFailureSkipsNothing(t *testing.T) {
	w := newWorld(t, time.Minute)
	var failed atomic.Int32
	var victim atomic.Value
	victim.Store("")
	s := w.start(w.pgURL, w.key, func(c *lifecycle.Config) {
		// Fail for half a second from the first attempt: a store hiccup
		// while the event is in flight.
		c.Wrap = partitiontest.FailOn(func() string { return victim.Load().(string) }, errors.New("connection reset by peer"), partitiontest.FailFor(500*time.Millisecond, &failed))
	})
	envs := make([][]*eventv1.Envelope, 10)
	now := w.clock.Now()
	// The victim is the second message of c00; its conversation's later
	// events are in the log before the consumer sees it.
	first := w.publish("acme", "c00", now.Add(-3*time.Minute), started(eventv1.Channel_CHANNEL_WEB_WIDGET))
	victimEnv := envelope("acme", "c00", now.Add(-2*time.Minute), visitorMsg("message 0"))
	victim.Store(victimEnv.GetEventId())
	w.publishEnv(victimEnv)
	envs[0] = []*eventv1.Envelope{first, victimEnv}
	for i := 1; i < 5; i++ {
		envs[0] = append(envs[0], w.publish("acme", "c00", now.Add(-2*time.Minute+time.Duration(i)*time.Second), visitorMsg(fmt.Sprintf("message %d", i))))
	}
	w.publish("acme", "c00", now.Add(-time.Minute), closedBy(eventv1.Actor_ACTOR_VISITOR))
	for i := 1; i < 10; i++ {
		envs[i] = w.conversation(fmt.Sprintf("c%02d", i), 5)
	}
	s.quiet()
	if failed.Load() < 1 {
		t.Fatal("the fault was not injected")
	}
	for i := range 10 {
		id := fmt.Sprintf("c%02d", i)
		st := s.state(id)
		if !ended(st) || st.VisitorMessages != 5 || st.LateEvents != 0 {
			t.Fatalf("%s: %v", id, st)
		}
		if n := w.count("acme", id, "conversation_ended"); n != 1 {
			t.Fatalf("%s: %d conversation_ended", id, n)
		}
	}
	if d := partitiontest.DeadLetters(t, w.bus.JetStream(), ""); len(d) != 0 {
		t.Fatalf("dead letters: %v", d)
	}
}

// One event refused permanently: it is dead-lettered with its reason, the
// later events of its conversation are held (dead-lettered as held, not
// applied), other conversations are unaffected.
func TestPermanentFailureHoldsTheConversation(t *testing.T) {
	w := newWorld(t, time.Minute)
	now := w.clock.Now()
	poison := envelope("acme", "p00", now.Add(-2*time.Minute), visitorMsg("poison"))
	s := w.start(w.pgURL, w.key, func(c *lifecycle.Config) {
		c.Wrap = partitiontest.FailOn(poison.GetEventId, eventbus.Permanent(errors.New("refused: test poison")), func() bool { return true })
	})
	w.publish("acme", "p00", now.Add(-3*time.Minute), started(eventv1.Channel_CHANNEL_WEB_WIDGET))
	w.publish("acme", "p00", now.Add(-150*time.Second), visitorMsg("before"))
	w.publishEnv(poison)
	after := w.publish("acme", "p00", now.Add(-90*time.Second), visitorMsg("after"))
	closed := w.publish("acme", "p00", now.Add(-time.Minute), closedBy(eventv1.Actor_ACTOR_VISITOR))
	for i := 1; i < 10; i++ {
		w.conversation(fmt.Sprintf("p%02d", i), 3)
	}
	s.quiet()
	d := partitiontest.DeadLetters(t, w.bus.JetStream(), "")
	if len(d) != 3 || d[poison.GetEventId()] != "refused: test poison" || d[after.GetEventId()] == "" || d[closed.GetEventId()] == "" {
		t.Fatalf("dead letters: %v", d)
	}
	st := s.state("p00")
	if ended(st) || st.VisitorMessages != 1 {
		t.Fatalf("held conversation applied around its dead letter: %v", st)
	}
	var blocked int64
	if err := s.pool.QueryRow(context.Background(), `SELECT blocked_seq FROM partition_held WHERE consumer = $1 AND tenant_id = 'acme' AND conversation_id = 'p00'`, consumer.Durable).Scan(&blocked); err != nil {
		t.Fatalf("hold not recorded: %v", err)
	}
	for i := 1; i < 10; i++ {
		id := fmt.Sprintf("p%02d", i)
		if st := s.state(id); !ended(st) || st.VisitorMessages != 3 {
			t.Fatalf("%s: %v", id, st)
		}
	}
}

// PostgreSQL unreachable for a while: the consumer pauses (not ready),
// nothing is dead-lettered, and once the database returns every event is
// applied exactly.
func TestStoreOutagePauses(t *testing.T) {
	w := newWorld(t, time.Minute)
	u, err := url.Parse(w.pgURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testsvc.StartFlakyProxy(t, u.Host)
	u.Host = proxy.Addr()
	s := w.start(u.String(), w.key, nil)
	for i := range 5 {
		w.conversation(fmt.Sprintf("o%02d", i), 3)
	}
	s.waitState("o04", "ended before the outage", ended)
	proxy.SetDown(true)
	for i := 5; i < 15; i++ {
		w.conversation(fmt.Sprintf("o%02d", i), 3)
	}
	w.waitFor("the consumer's readiness check to fail", func() bool { return !testsvc.CheckReady(s.admin, "consumer") })
	time.Sleep(2 * time.Second) // the outage lasts; deliveries must not be spent
	proxy.SetDown(false)
	w.waitFor("readiness back", func() bool { return testsvc.CheckReady(s.admin, "consumer") })
	s.quiet()
	for i := range 15 {
		id := fmt.Sprintf("o%02d", i)
		if st := s.state(id); !ended(st) || st.VisitorMessages != 3 || st.LateEvents != 0 {
			t.Fatalf("%s: %v", id, st)
		}
		if n := w.count("acme", id, "conversation_ended"); n != 1 {
			t.Fatalf("%s: %d conversation_ended", id, n)
		}
	}
	if d := partitiontest.DeadLetters(t, w.bus.JetStream(), ""); len(d) != 0 {
		t.Fatalf("dead letters: %v", d)
	}
}

// Two replicas divide the partitions; one dies without releasing its
// leases and its partitions move to the survivor within seconds; every
// conversation is applied exactly.
func TestTwoReplicasDividePartitions(t *testing.T) {
	w := newWorld(t, time.Minute)
	const ttl = 2 * time.Second
	a := w.start(w.pgURL, w.key, func(c *lifecycle.Config) { c.Member, c.LeaseTTL, c.KeepLeases = "a", ttl, true })
	b := w.start(w.pgURL, w.key, func(c *lifecycle.Config) { c.Member, c.LeaseTTL = "b", ttl })
	w.waitFor("both replicas hold partitions", func() bool {
		o := partitiontest.Owners(t, a.pool, consumer.Durable)
		return o["a"] == partition.DefaultPartitions/2 && o["b"] == partition.DefaultPartitions/2
	})
	for i := range 20 {
		w.conversation(fmt.Sprintf("r%02d", i), 5)
	}
	a.quiet()
	a.stop() // leases kept, as by a crash
	killed := time.Now()
	for i := 20; i < 40; i++ {
		w.conversation(fmt.Sprintf("r%02d", i), 5)
	}
	w.waitFor("the survivor holds every partition", func() bool {
		return partitiontest.Owners(t, b.pool, consumer.Durable)["b"] == partition.DefaultPartitions
	})
	if d := time.Since(killed); d > 3*ttl {
		t.Fatalf("takeover took %v", d)
	}
	b.quiet()
	for i := range 40 {
		id := fmt.Sprintf("r%02d", i)
		if st := b.state(id); !ended(st) || st.VisitorMessages != 5 || st.LateEvents != 0 {
			t.Fatalf("%s: %v", id, st)
		}
		if n := w.count("acme", id, "conversation_ended"); n != 1 {
			t.Fatalf("%s: %d conversation_ended", id, n)
		}
	}
}
