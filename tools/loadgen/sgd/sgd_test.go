package sgd

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/tools/loadgen/scenario"
	"google.golang.org/protobuf/proto"
)

const fixture = "../testdata/sgd"

var opts = Options{Tenants: []string{"acme", "globex"}, Seed: 9, RunID: "r1", Start: time.Date(2026, 2, 1, 12, 0, 0, 0, time.UTC), Spread: time.Hour}

func readFixture(t *testing.T) []Dialogue {
	t.Helper()
	c, err := Open(fixture)
	if err != nil {
		t.Fatal(err)
	}
	var ds []Dialogue
	for {
		d, err := c.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	return ds
}

func kinds(c scenario.Conversation) []string {
	var out []string
	for _, e := range c.Events {
		out = append(out, eventbus.Kind(e))
	}
	return out
}

func TestFilesSkipsSchema(t *testing.T) {
	fs, err := Files(fixture)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 2 || filepath.Base(fs[0]) != "dialogues_001.json.gz" || filepath.Base(fs[1]) != "dialogues_002.json" {
		t.Fatalf("files: %v", fs)
	}
	if _, err := Files(t.TempDir()); err == nil {
		t.Fatal("an empty directory is not a corpus")
	}
}

func TestConvertFixture(t *testing.T) {
	ds := readFixture(t)
	if len(ds) != 3 || ds[0].DialogueID != "1_00001" || ds[2].DialogueID != "3_00042" {
		t.Fatalf("dialogues: %d", len(ds))
	}
	var convs []scenario.Conversation
	for i, d := range ds {
		c, err := Convert(d, i, opts)
		if err != nil {
			t.Fatal(err)
		}
		checkConversation(t, c, opts.Start, opts.Start.Add(opts.Spread))
		convs = append(convs, c)
	}

	// 1: two intents; RentBike succeeds, FindBikes is left; goodbye closes.
	c := convs[0]
	if c.ID != "sgd-r1-1_00001" || c.BotID != "Bikes_9" || !c.Closed {
		t.Fatalf("conversation 1: %s %s closed=%v", c.ID, c.BotID, c.Closed)
	}
	want := []string{"conversation_started",
		"message_posted", "flow_started",
		"message_posted", "flow_step",
		"message_posted", "variables_captured",
		"message_posted", "flow_step", "debug_trace",
		"message_posted", "flow_started", "variables_captured",
		"message_posted", "flow_step",
		"message_posted",
		"message_posted", "flow_step", "debug_trace", "flow_completed", "goal_reached",
		"message_posted",
		"message_posted",
		"flow_dropped", "conversation_closed"}
	if got := kinds(c); !slices.Equal(got, want) {
		t.Fatalf("conversation 1 kinds:\n got %v\nwant %v", got, want)
	}
	var completed, goal, dropped, lastVisitor string
	vars := map[string]string{}
	for _, e := range c.Events {
		switch p := e.Payload.(type) {
		case *eventv1.Envelope_MessagePosted:
			m := p.MessagePosted
			if m.Role == eventv1.Role_ROLE_VISITOR {
				lastVisitor = m.MessageId
			} else if m.ReplyToMessageId != lastVisitor || m.ResponseTimeMs < 500 {
				t.Fatalf("bot message %v does not answer %s", m, lastVisitor)
			}
		case *eventv1.Envelope_FlowCompleted:
			completed = p.FlowCompleted.FlowId
		case *eventv1.Envelope_GoalReached:
			goal = p.GoalReached.GoalId
		case *eventv1.Envelope_FlowDropped:
			dropped = p.FlowDropped.FlowId
			if p.FlowDropped.Failed || p.FlowDropped.StepId != "offer:shop" {
				t.Fatalf("FindBikes drop: %v", p.FlowDropped)
			}
		case *eventv1.Envelope_VariablesCaptured:
			for k, v := range p.VariablesCaptured.Variables {
				vars[k] = v
			}
		case *eventv1.Envelope_DebugTrace:
			if p.DebugTrace.MessageId != lastVisitor || !strings.HasPrefix(p.DebugTrace.Steps[0].Name, "service_call Bikes_9.") {
				t.Fatalf("debug trace %v (last visitor message %s)", p.DebugTrace, lastVisitor)
			}
		case *eventv1.Envelope_ConversationClosed:
			if p.ConversationClosed.ClosedBy != eventv1.Actor_ACTOR_VISITOR {
				t.Fatalf("closed by %v", p.ConversationClosed.ClosedBy)
			}
		}
	}
	if completed != "RentBike" || goal != "RentBike" || dropped != "FindBikes" {
		t.Fatalf("completed %q, goal %q, dropped %q", completed, goal, dropped)
	}
	if vars["town"] != "Lindenfeld" || vars["shop"] != "Velo Corner" || vars["day"] != "Saturday" {
		t.Fatalf("variables: %v", vars)
	}
	first := c.Events[1].GetMessagePosted()
	if first.Text != "I'd like to hire a bike for the weekend." || first.Intent.GetName() != "FindBikes" {
		t.Fatalf("first visitor message: %v", first)
	}

	// 2: failure → failed drop, closed.
	c = convs[1]
	var failed bool
	for _, e := range c.Events {
		if d := e.GetFlowDropped(); d != nil {
			failed = d.Failed && d.FlowId == "ReserveBook"
		}
		if e.GetFlowCompleted() != nil || e.GetGoalReached() != nil {
			t.Fatal("a failed reservation reached a goal")
		}
	}
	if !failed || !c.Closed {
		t.Fatalf("conversation 2: failed drop %v, closed %v: %v", failed, c.Closed, kinds(c))
	}

	// 3: two services; both flows dropped; open.
	c = convs[2]
	var drops []string
	for _, e := range c.Events {
		if d := e.GetFlowDropped(); d != nil {
			drops = append(drops, d.FlowId)
		}
		if m := e.GetMessagePosted(); m != nil && m.Role == eventv1.Role_ROLE_BOT && strings.HasPrefix(m.Text, "Do you want") && m.Intent.GetName() != "FindBikes" {
			t.Fatalf("bot message intent %v, want the Bikes service's FindBikes", m.Intent)
		}
	}
	if c.Closed || !slices.Equal(drops, []string{"FindBikes", "GetForecast"}) || c.Events[0].GetConversationStarted().Variables["services"] != "Weather_7,Bikes_9" {
		t.Fatalf("conversation 3: closed %v, drops %v, kinds %v", c.Closed, drops, kinds(c))
	}

	// Deterministic.
	again, _ := Convert(ds[0], 0, opts)
	for k := range again.Events {
		if !proto.Equal(again.Events[k], convs[0].Events[k]) {
			t.Fatalf("event %d differs on a second conversion", k)
		}
	}
}

func TestConversationID(t *testing.T) {
	for _, c := range []struct{ run, id, want string }{
		{"", "1_00000", "sgd-1_00000"},
		{"x7", "1_00000", "sgd-x7-1_00000"},
		{"", "a.b c*>é", "sgd-a_b_c___"},
	} {
		if got := ConversationID(c.run, c.id); got != c.want {
			t.Errorf("ConversationID(%q, %q) = %q, want %q", c.run, c.id, got, c.want)
		}
	}
	if got := ConversationID("r", strings.Repeat("9", 300)); len(got) != 128 || !eventbus.ValidConversationID(got) {
		t.Errorf("long id: %d characters", len(got))
	}
}

func TestConvertRefuses(t *testing.T) {
	if _, err := Convert(Dialogue{DialogueID: "x"}, 0, opts); err == nil {
		t.Error("a dialogue without turns converted")
	}
	if _, err := Convert(Dialogue{DialogueID: "x", Turns: []Turn{{Speaker: "USER"}}}, 0, Options{}); err == nil {
		t.Error("converted without tenants")
	}
}

// TestRealCorpus converts a sample of a real SGD corpus and checks every
// conversation. It is opt-in: PARLEY_SGD_DIR names the corpus directory
// (the corpus is not part of the repository; the fixture tests above always
// run). PARLEY_SGD_ALL=1 checks every dialogue (12,174 in the training split,
// about 5 s).
func TestRealCorpus(t *testing.T) {
	dir := os.Getenv("PARLEY_SGD_DIR")
	if dir == "" {
		t.Skip("opt-in: set PARLEY_SGD_DIR to an SGD corpus directory")
	}
	files, err := Files(dir)
	if err != nil {
		t.Fatalf("PARLEY_SGD_DIR=%s: %v", dir, err)
	}
	if os.Getenv("PARLEY_SGD_ALL") == "" {
		files = files[:min(len(files), 6)]
	}
	var n, closed, goals, events int
	o := opts
	o.Spread = 24 * time.Hour
	for _, f := range files {
		ds, err := ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			conv, err := Convert(d, n, o)
			if err != nil {
				t.Fatal(err)
			}
			n++
			checkConversation(t, conv, o.Start, o.Start.Add(o.Spread))
			events += len(conv.Events)
			if conv.Closed {
				closed++
			}
			for _, e := range conv.Events {
				if e.GetGoalReached() != nil {
					goals++
				}
			}
		}
	}
	t.Logf("%d dialogues, %d events, %d closed, %d goals", n, events, closed, goals)
	if n < 500 || closed < n/3 || goals < n/2 {
		t.Fatalf("%d dialogues, %d closed, %d goals", n, closed, goals)
	}
}

// checkConversation applies ingest's rules and the ordering loadgen relies on.
func checkConversation(t testing.TB, c scenario.Conversation, from, to time.Time) {
	t.Helper()
	if !eventbus.ValidConversationID(c.ID) {
		t.Fatalf("invalid conversation id %q", c.ID)
	}
	if len(c.Events) == 0 || c.Events[0].GetConversationStarted() == nil {
		t.Fatalf("%s: does not begin with conversation_started", c.ID)
	}
	var prev time.Time
	seen := map[string]bool{}
	for k, e := range c.Events {
		at := e.GetOccurredAt().AsTime()
		if (k > 0 && !at.After(prev)) || at.Before(from) || at.After(to) {
			t.Fatalf("%s: event %d at %v (previous %v, window %v..%v)", c.ID, k, at, prev, from, to)
		}
		prev = at
		if e.ConversationId != c.ID || e.ClientEventId == "" || seen[e.ClientEventId] || len(e.ClientEventId) > 128 {
			t.Fatalf("%s: event %d ids %q %q", c.ID, k, e.ConversationId, e.ClientEventId)
		}
		seen[e.ClientEventId] = true
		if eventbus.Kind(e) == "" {
			t.Fatalf("%s: event %d without payload", c.ID, k)
		}
		if m := e.GetMessagePosted(); m != nil && (m.Role == eventv1.Role_ROLE_UNSPECIFIED || len(m.Text) > MaxTextBytes || !utf8.ValidString(m.Text)) {
			t.Fatalf("%s: message %v", c.ID, m)
		}
		if e.GetConversationClosed() != nil && k != len(c.Events)-1 {
			t.Fatalf("%s: close is not the last event", c.ID)
		}
	}
}

func FuzzParseDialogues(f *testing.F) {
	for _, p := range []string{"dialogues_002.json"} {
		b, err := os.ReadFile(filepath.Join(fixture, p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		`[]`, `null`, `{}`, `[{}]`, `[{"dialogue_id":"x","turns":[{}]}]`,
		`[{"dialogue_id":"x","turns":[{"speaker":"SYSTEM","frames":[{"actions":[{"act":"NOTIFY_SUCCESS"}]}]}]}]`,
		`[{"dialogue_id":"x","turns":[{"speaker":"USER","frames":[{"service":"s","state":{"active_intent":"I","slot_values":{"a":[]}}}]},{"speaker":"SYSTEM","frames":[{"service":"s","service_call":{"method":"I"},"actions":[{"act":"NOTIFY_FAILURE"},{"act":"NOTIFY_SUCCESS"}]}]}]}]`,
		`[{"dialogue_id":"..","services":[""],"turns":[{"speaker":"USER","utterance":"\ud800","frames":null}]}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ds, err := ParseDialogues(data)
		if err != nil {
			return
		}
		for i, d := range ds {
			c, err := Convert(d, i, Options{Tenants: []string{"t"}, Start: opts.Start, Spread: time.Minute})
			if err != nil {
				continue
			}
			checkConversation(t, c, opts.Start, opts.Start.Add(time.Minute))
		}
	})
}
