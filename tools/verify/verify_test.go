package verify

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/tools/loadgen"
)

func acksFixture() []loadgen.Ack {
	return []loadgen.Ack{
		{Tenant: "acme", Conversation: "c1", EventID: "e1", Kind: "conversation_started", Seq: 1},
		{Tenant: "acme", Conversation: "c1", EventID: "e2", Kind: "message_posted", Seq: 2},
		{Tenant: "acme", Conversation: "c1", EventID: "e2", Kind: "message_posted", Seq: 2, Duplicate: true},
		{Tenant: "acme", Conversation: "c1", EventID: "e3", Kind: "conversation_closed", Seq: 4},
		{Tenant: "acme", Conversation: "c2", EventID: "e4", Kind: "message_posted", Seq: 3},
		{Tenant: "beta", Conversation: "c1", EventID: "e5", Kind: "message_posted", Seq: 5},
	}
}

// envelope returns a stream copy of an acknowledged event.
func envelope(tenant string, ev *ackedEvent) *eventv1.Envelope {
	env := &eventv1.Envelope{EventId: ev.id, TenantId: tenant, ConversationId: ev.conv, Producer: "ingest"}
	switch ev.kind {
	case "conversation_started":
		env.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: &eventv1.ConversationStarted{}}
	case "message_posted":
		env.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{MessageId: "m-" + ev.id, Role: eventv1.Role_ROLE_VISITOR}}
	case "conversation_closed":
		env.Payload = &eventv1.Envelope_ConversationClosed{ConversationClosed: &eventv1.ConversationClosed{ClosedBy: eventv1.Actor_ACTOR_VISITOR}}
	}
	return env
}

// settle puts every acknowledged event into the stream (and a
// conversation_ended after each close) and makes every store agree with it.
func settle(e *expectation) {
	for _, t := range e.tenants {
		for _, conv := range t.convOrder {
			c := t.convs[conv]
			for _, ev := range t.eventsByConv[conv] {
				t.observe(envelope(t.tenant, ev), ev.seq, e.window)
				if ev.kind == "conversation_closed" {
					t.observe(&eventv1.Envelope{EventId: "ended-" + conv, TenantId: t.tenant, ConversationId: conv, Producer: "lifecycle", CausationId: ev.id,
						Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_VISITOR_CLOSED}}}, 100+ev.seq, e.window)
				}
			}
			f := c.fold
			c.pgKnown, c.chRow, c.tgKnown = true, true, true
			c.pgStatus, c.chStatus = "active", "active"
			if f.ended > 0 {
				c.pgStatus, c.chStatus, c.pgReason, c.chReason = "ended", "ended", "END_REASON_VISITOR_CLOSED", "visitor_closed"
				c.tgEnded, c.tgReason = true, "visitor_closed"
			}
			c.pgCounts, c.tgCounts = f.lc.expected(), f.tg.counts
			c.chEvents, c.chMessages, c.chMsgCount, c.chEventCount = len(f.ids), f.messages, f.messagesBeforeEnd, f.eventCount
		}
	}
}

func checks(r *Report) []string {
	var out []string
	for _, p := range r.Problems {
		out = append(out, p.Tenant+" "+p.Check+" "+strings.Join(p.IDs, ","))
	}
	return out
}

func TestEvaluate(t *testing.T) {
	e, err := expectations(acksFixture())
	if err != nil {
		t.Fatal(err)
	}
	settle(e)
	rep := e.evaluate()
	if !rep.OK() || rep.EndedOnce != 1 || rep.Lost != 0 || len(rep.Tenants) != 2 {
		t.Fatalf("settled: %v", checks(rep))
	}
	acme := rep.Tenants[0]
	if acme.AckLines != 5 || acme.AckDuplicates != 1 || acme.Events != 4 || acme.Messages != 2 || acme.Conversations != 2 || acme.Closed != 1 || acme.CHEvents != 5 {
		t.Fatalf("acme: %+v", acme)
	}
	var out bytes.Buffer
	rep.Write(&out)
	if !strings.Contains(out.String(), "\nOK: 0 lost, 0 duplicated, 1 conversations ended once (") {
		t.Fatalf("output:\n%s", out.String())
	}

	// Break things one at a time.
	for name, c := range map[string]struct {
		mutate func(*expectation)
		want   []string
	}{
		"lost": {func(e *expectation) { e.byID["acme"].events["e4"].stored = nil },
			// c2 had only e4: nothing of it reached the stream, so nothing is expected downstream.
			[]string{"acme stream.lost e4"}},
		"duplicated": {func(e *expectation) { e.byID["beta"].events["e5"].stored = []uint64{5, 9} },
			[]string{"beta stream.duplicated e5"}},
		"sequence": {func(e *expectation) { e.byID["beta"].events["e5"].stored = []uint64{6} },
			[]string{"beta stream.sequence e5"}},
		"ended twice": {func(e *expectation) { e.byID["acme"].convs["c1"].fold.ended = 2 },
			[]string{"acme stream.ended_twice c1"}},
		"not ended": {func(e *expectation) {
			c := e.byID["acme"].convs["c1"]
			c.fold.ended, c.fold.endReason, c.pgStatus, c.pgReason, c.chStatus, c.chReason, c.tgEnded, c.tgReason = 0, 0, "active", "", "active", "", false, ""
		}, []string{"acme lifecycle.closed_active c1", "acme lifecycle.not_ended c1"}},
		"other end reason": {func(e *expectation) {
			c := e.byID["acme"].convs["c1"]
			c.pgReason, c.chReason, c.tgReason = "END_REASON_AGENT_CLOSED", "agent_closed", "agent_closed"
		}, []string{"acme clickhouse.ended c1", "acme lifecycle.end_reason c1", "acme tagging.ended c1"}},
		"lifecycle count short": {func(e *expectation) { e.byID["acme"].convs["c1"].pgCounts.VisitorMessages-- },
			[]string{"acme lifecycle.counts c1"}},
		"tagging facts missing": {func(e *expectation) {
			c := e.byID["beta"].convs["c1"]
			c.tgKnown, c.tgCounts = false, taggingCounts{}
		}, []string{"beta tagging.unknown c1"}},
		"tagging events short": {func(e *expectation) { e.byID["beta"].convs["c1"].tgCounts.Events-- },
			[]string{"beta tagging.counts c1"}},
		"tag not in the stream": {func(e *expectation) {
			c := e.byID["beta"].convs["c1"]
			c.tgTags, c.tgIssues = []string{"long-wait"}, []string{"long-wait"}
		}, []string{"beta tagging.issues c1", "beta tagging.tags c1"}},
		"clickhouse tag missing": {func(e *expectation) {
			e.byID["beta"].convs["c1"].fold.tags["vip"] = true
			e.byID["beta"].convs["c1"].tgTags = []string{"vip"}
		},
			[]string{"beta clickhouse.tags c1"}},
		"event_count short": {func(e *expectation) { e.byID["acme"].convs["c2"].chEventCount-- },
			[]string{"acme clickhouse.event_count c2"}},
		"projection behind": {func(e *expectation) {
			c := e.byID["acme"].convs["c1"]
			c.chEvents, c.chMessages, c.chMsgCount = 2, 0, 0
		}, []string{"acme clickhouse.events c1", "acme clickhouse.message_count c1", "acme clickhouse.messages c1"}},
		"missing row": {func(e *expectation) {
			e.byID["beta"].convs["c1"].chRow, e.byID["beta"].convs["c1"].pgKnown = false, false
		},
			[]string{"beta clickhouse.conversations c1", "beta lifecycle.unknown c1"}},
	} {
		e, _ := expectations(acksFixture())
		settle(e)
		c.mutate(e)
		rep := e.evaluate()
		if got := checks(rep); !slices.Equal(got, c.want) {
			t.Errorf("%s: got %q, want %q", name, got, c.want)
		}
		pendingOnly := len(rep.pending()) == len(rep.Problems)
		if (name != "lost" && name != "duplicated" && name != "sequence" && name != "ended twice") != pendingOnly {
			t.Errorf("%s: pending %v of %v", name, rep.pending(), rep.Problems)
		}
	}

	// A conversation ended by the stale sweep is a note, not a problem.
	e, _ = expectations(acksFixture())
	settle(e)
	c := e.byID["acme"].convs["c2"]
	e.byID["acme"].observe(&eventv1.Envelope{EventId: "ended-c2", TenantId: "acme", ConversationId: "c2", Producer: "lifecycle",
		Payload: &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_STALE_TIMEOUT}}}, 200, e.window)
	c.pgStatus, c.chStatus, c.pgReason, c.chReason, c.tgEnded, c.tgReason = "ended", "ended", "END_REASON_STALE_TIMEOUT", "stale_timeout", true, "stale_timeout"
	c.chEvents, c.chEventCount, c.tgCounts.Events = c.chEvents+1, c.chEventCount+1, c.tgCounts.Events+1
	rep = e.evaluate()
	if !rep.OK() || len(rep.Notes) != 1 || rep.Tenants[0].Stale != 1 {
		t.Fatalf("stale: %v, notes %v", checks(rep), rep.Notes)
	}
}

func TestExpectationsInconsistentAck(t *testing.T) {
	acks := append(acksFixture(), loadgen.Ack{Tenant: "acme", Conversation: "c1", EventID: "e2", Kind: "message_posted", Seq: 7})
	e, err := expectations(acks)
	if err != nil {
		t.Fatal(err)
	}
	settle(e)
	if got := checks(e.evaluate()); !slices.Equal(got, []string{"acme ack.inconsistent e2"}) {
		t.Fatalf("got %q", got)
	}
	if _, err := expectations([]loadgen.Ack{{Tenant: "a.b", Conversation: "c", EventID: "e"}}); err == nil {
		t.Fatal("invalid tenant accepted")
	}
}
