package verify

import (
	"bytes"
	"slices"
	"strings"
	"testing"

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

// settle makes every store agree with the ack log.
func settle(e *expectation) {
	for _, t := range e.tenants {
		for _, ev := range t.events {
			ev.stored = []uint64{ev.seq}
		}
		for id, c := range t.convs {
			c.pgKnown, c.chRow = true, true
			c.pgStatus, c.chStatus = "active", "active"
			if c.closed {
				c.ended, c.pgStatus, c.chStatus, c.pgReason = 1, "ended", "ended", "END_REASON_VISITOR_CLOSED"
			}
			for _, ev := range t.eventsByConv[id] {
				c.chEvents++
				if ev.kind == "message_posted" {
					c.chMessages++
					c.chMsgCount++
				}
			}
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
	if acme.AckLines != 5 || acme.AckDuplicates != 1 || acme.Events != 4 || acme.Messages != 2 || acme.Conversations != 2 || acme.Closed != 1 || acme.CHEvents != 4 {
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
		"ended twice": {func(e *expectation) { e.byID["acme"].convs["c1"].ended = 2 },
			[]string{"acme stream.ended_twice c1"}},
		"not ended": {func(e *expectation) {
			c := e.byID["acme"].convs["c1"]
			c.ended, c.pgStatus, c.chStatus = 0, "active", "active"
		}, []string{"acme lifecycle.closed_active c1", "acme lifecycle.not_ended c1"}},
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
		if (name == "not ended" || name == "projection behind" || name == "missing row") != pendingOnly {
			t.Errorf("%s: pending %v of %v", name, rep.pending(), rep.Problems)
		}
	}

	// A conversation ended by the stale sweep is a note, not a problem.
	e, _ = expectations(acksFixture())
	settle(e)
	c := e.byID["acme"].convs["c2"]
	c.ended, c.pgStatus, c.chStatus, c.pgReason = 1, "ended", "ended", "END_REASON_STALE_TIMEOUT"
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
