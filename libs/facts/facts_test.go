package facts_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/facts"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"google.golang.org/protobuf/proto"
)

func TestFoldCountsAndBounds(t *testing.T) {
	c := evtest.New("acme", "c1")
	st := &taggingv1.RuleConversation{}
	apply := func(e *eventv1.Envelope) *taggingv1.RuleEvent {
		ev, _ := facts.Apply(st, e, facts.Options{MaxMessages: 3})
		return ev
	}
	apply(c.Event(&eventv1.ConversationStarted{BotId: "b", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET,
		Platform: eventv1.Platform_PLATFORM_APP, Variables: map[string]string{"name": "Ann", "plan": "free"}}))
	apply(c.Event(&eventv1.VariablesCaptured{Variables: map[string]string{"plan": "pro"}}))
	for i := range 5 {
		apply(c.VisitorIntent(fmt.Sprintf("question %d", i), "faq"))
		apply(c.Bot(fmt.Sprintf("answer %d", i), uint32(100*i)))
	}
	ev := apply(c.Visitor(strings.Repeat("é", facts.MaxTextBytes)))
	if st.VisitorMessages != 6 || st.BotMessages != 5 || !st.VisitorReplied || st.MaxResponseMs != 400 {
		t.Fatalf("counts: %+v", st)
	}
	if len(st.Messages) != 3 || st.Messages[0].Text != "question 4" {
		t.Fatalf("window of 3 messages: %v", st.Messages)
	}
	if last := st.Messages[2].Text; len(last) > facts.MaxTextBytes || !strings.HasPrefix(last, "éé") || len(ev.Text) != 2*facts.MaxTextBytes {
		t.Fatalf("text bounded in state (%d bytes) but whole in the event (%d bytes)", len(last), len(ev.Text))
	}
	if st.Variables["plan"] != "pro" || st.Variables["name"] != "Ann" || st.Channel != "web_widget" || st.Platform != "app" {
		t.Fatalf("metadata: %+v", st)
	}
	if !slices.Equal(st.Intents, []string{"faq"}) {
		t.Fatalf("intents: %v", st.Intents)
	}
	// Tagging's own events are not folded and do not count.
	before := st.Events
	ev, changed := facts.Apply(st, c.Event(&eventv1.TagApplied{Tag: "x"}), facts.Options{MaxMessages: 3})
	if st.Events != before || ev.Kind != "tag_applied" || changed != 0 {
		t.Fatal("own events must not be folded or evaluated")
	}
	// A message stored twice (same message id) is folded once.
	dup := c.Visitor("again")
	apply(dup)
	if _, changed := facts.Apply(st, dup, facts.Options{MaxMessages: 3}); changed != 0 || st.VisitorMessages != 7 {
		t.Fatalf("duplicate message folded again: %d visitor messages", st.VisitorMessages)
	}
	// Messages after the end do not change the conversation.
	apply(c.Ended(eventv1.EndReason_END_REASON_VISITOR_CLOSED))
	apply(c.Visitor("late"))
	if st.VisitorMessages != 7 || !st.Ended || st.EndReason != "visitor_closed" {
		t.Fatalf("after end: %+v", st)
	}
}

func detect(t *testing.T, s facts.Settings, envs ...*eventv1.Envelope) []facts.Issue {
	t.Helper()
	d := facts.NewDetectors(s.Or(facts.DefaultSettings()))
	st := &taggingv1.RuleConversation{}
	fired := map[string]bool{}
	var out []facts.Issue
	for _, e := range envs {
		ev, changed := facts.Apply(st, e, facts.Options{})
		if changed == 0 {
			continue
		}
		for _, is := range d.Detect(st, ev, e, func(n string) bool { return fired[n] }) {
			fired[is.Detector] = true
			out = append(out, is)
		}
	}
	return out
}

func names(is []facts.Issue) []string {
	var out []string
	for _, i := range is {
		out = append(out, i.Detector)
	}
	return out
}

func TestDetectors(t *testing.T) {
	type tc struct {
		name     string
		settings facts.Settings
		events   func(c *evtest.Conv) []*eventv1.Envelope
		want     []string
		msgID    string
	}
	cases := []tc{
		{"unidentified response", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("blorp"), c.Fallback("Sorry?"), c.Visitor("zzz"), c.Fallback("Sorry?")}
		}, []string{facts.UnidentifiedResponse}, "m2"},
		{"bot error in a debug trace", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("pay"), c.Event(&eventv1.DebugTrace{MessageId: "m1", Steps: []*eventv1.DebugStep{{Name: "nlu"}, {Name: "call_api", Error: true}}})}
		}, []string{facts.BotError}, "m1"},
		{"bot error from a failed flow", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Event(&eventv1.FlowDropped{FlowId: "checkout", NodeId: "pay", Failed: true})}
		}, []string{facts.BotError}, ""},
		{"a flow the visitor left is not a bot error", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Event(&eventv1.FlowDropped{FlowId: "checkout", NodeId: "pay"})}
		}, nil, ""},
		{"repeated question", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("Where is my order?"), c.Bot("Which order?", 10), c.Visitor("where is my order??")}
		}, []string{facts.RepeatedQuestion}, "m3"},
		{"near-same question", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("how do I reset my password"), c.Bot("Click reset.", 10), c.Visitor("how do I reset my password please")}
		}, []string{facts.RepeatedQuestion}, "m3"},
		{"short answers are not questions", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("yes"), c.Bot("Sure?", 10), c.Visitor("yes"), c.Visitor("no thanks"), c.Visitor("no thanks")}
		}, nil, ""},
		{"repeat outside the window", facts.Settings{RepeatWindow: 2}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("where is my order"), c.Visitor("one two three"), c.Visitor("four five six"), c.Visitor("where is my order")}
		}, nil, ""},
		{"abandoned after the bot", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("price?"), c.Bot("Which plan do you mean?", 10), c.Ended(eventv1.EndReason_END_REASON_STALE_TIMEOUT)}
		}, []string{facts.AbandonedAfterBot}, "m2"},
		{"not abandoned: the visitor never wrote", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Bot("Hi!", 0), c.Ended(eventv1.EndReason_END_REASON_STALE_TIMEOUT)}
		}, nil, ""},
		{"not abandoned: the flow completed", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Event(&eventv1.FlowStarted{FlowId: "order"}), c.Visitor("where is my order"),
				c.Event(&eventv1.FlowCompleted{FlowId: "order"}), c.Bot("It ships today. Anything else?", 10), c.Ended(eventv1.EndReason_END_REASON_VISITOR_CLOSED)}
		}, nil, ""},
		{"not abandoned: a goal was reached", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("sign me up"), c.Event(&eventv1.GoalReached{GoalId: "signup"}), c.Bot("Done!", 10), c.Ended(eventv1.EndReason_END_REASON_STALE_TIMEOUT)}
		}, nil, ""},
		{"not abandoned: the bot completed", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("thanks"), c.Bot("Bye!", 10), c.Ended(eventv1.EndReason_END_REASON_BOT_COMPLETED)}
		}, nil, ""},
		{"long wait for a bot answer", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("hello"), c.Bot("hi", 29_000), c.Agent("hi", 31_000)}
		}, []string{facts.LongWait}, "m3"},
		{"long wait threshold is tunable", facts.Settings{LongWait: 5 * time.Second}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("hello"), c.Bot("hi", 6_000)}
		}, []string{facts.LongWait}, "m2"},
		{"long wait: no operator", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Event(&eventv1.HandoffRequested{}), c.Event(&eventv1.OperatorNoResponse{WaitedSeconds: 300})}
		}, []string{facts.LongWait}, ""},
		{"negative feedback", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("This bot is USELESS!"), c.Visitor("I want to speak to a human")}
		}, []string{facts.NegativeFeedback}, "m1"},
		{"negative words match whole words only", facts.Settings{}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("the terrible2 plan is uselessly named"), c.Bot("that's wrong", 10)}
		}, nil, ""},
		{"negative phrases are tunable", facts.Settings{NegativePhrases: []string{"nicht hilfreich"}}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Visitor("useless"), c.Visitor("Das ist nicht hilfreich.")}
		}, []string{facts.NegativeFeedback}, "m2"},
		{"disabled detectors do not run", facts.Settings{Disabled: []string{facts.UnidentifiedResponse}}, func(c *evtest.Conv) []*eventv1.Envelope {
			return []*eventv1.Envelope{c.Fallback("Sorry?")}
		}, nil, ""},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := detect(t, tc.settings, tc.events(evtest.New("acme", fmt.Sprintf("d%d", i)))...)
			if !slices.Equal(names(got), tc.want) {
				t.Fatalf("got %v (%+v), want %v", names(got), got, tc.want)
			}
			if len(got) > 0 && got[0].MessageID != tc.msgID {
				t.Fatalf("message id %q, want %q", got[0].MessageID, tc.msgID)
			}
			for _, is := range got {
				if is.Details == "" {
					t.Fatalf("issue without details: %+v", is)
				}
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"Where's my ORDER??":   "wheres my order",
		"  speak-to a  human ": "speak to a human",
		"Ça va?":               "ça va",
		"":                     "",
	} {
		if got := facts.Normalize(in); got != want {
			t.Errorf("Normalize(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSettingsValidate(t *testing.T) {
	if f, _ := (facts.Settings{Disabled: []string{"nope"}}).Validate(); f != "disabled" {
		t.Fatalf("unknown detector: %q", f)
	}
	if f, _ := (facts.Settings{NegativePhrases: []string{"!!"}}).Validate(); f != "negative_phrases" {
		t.Fatalf("empty phrase: %q", f)
	}
	if f, p := facts.DefaultSettings().Validate(); f != "" {
		t.Fatalf("defaults invalid: %s %s", f, p)
	}
}

// TestChangedFieldsAreDeclared folds every kind of event and checks that
// every field that changed is in the set Apply reports: rules are skipped on
// that promise.
func TestChangedFieldsAreDeclared(t *testing.T) {
	c := evtest.New("acme", "all-kinds")
	envs := []*eventv1.Envelope{
		c.Event(&eventv1.ConversationStarted{BotId: "b", Channel: eventv1.Channel_CHANNEL_SMS, Platform: eventv1.Platform_PLATFORM_APP,
			Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE, Visitor: &eventv1.Visitor{Locale: "de"},
			Location: &eventv1.Location{Country: "DE"}, Variables: map[string]string{"a": "1"}}),
		c.VisitorIntent("hello there", "greet"), c.Fallback("??"), c.Bot("slow", 9000), c.Agent("hi", 100),
		c.Event(&eventv1.MessagePosted{Role: eventv1.Role_ROLE_SYSTEM, Text: "system"}),
		c.Event(&eventv1.VariablesCaptured{Variables: map[string]string{"a": "2", "b": "3"}}),
		c.Event(&eventv1.FlowStarted{FlowId: "f"}), c.Event(&eventv1.FlowStep{FlowId: "f", StepId: "s", NodeId: "n"}),
		c.Event(&eventv1.FlowDropped{FlowId: "f", NodeId: "n", Failed: true}), c.Event(&eventv1.FlowCompleted{}),
		c.Event(&eventv1.GoalReached{Name: "g"}), c.Event(&eventv1.LeadCaptured{Email: "x@y"}),
		c.Event(&eventv1.UsageRecorded{InputTokens: 1, OutputTokens: 2, CostMicros: 3}),
		c.Event(&eventv1.HandoffRequested{}), c.Event(&eventv1.AgentJoined{AgentId: "a"}), c.Event(&eventv1.OperatorNoResponse{}),
		c.Event(&eventv1.DebugTrace{Steps: []*eventv1.DebugStep{{Error: true}}}),
		c.Event(&eventv1.EngagementClassified{Engagement: eventv1.Engagement_ENGAGEMENT_ENGAGED}),
		c.Ended(eventv1.EndReason_END_REASON_AGENT_CLOSED), c.Visitor("late"),
	}
	loc := c.Event(&eventv1.ConversationStarted{})
	loc.Payload = &eventv1.Envelope_LocationResolved{LocationResolved: &eventv1.LocationResolved{Location: &eventv1.Location{Country: "FR"}}}
	envs = append(envs, loc)
	st := &taggingv1.RuleConversation{}
	seen := facts.Fields(0)
	for _, e := range envs {
		before := proto.Clone(st).(*taggingv1.RuleConversation)
		_, changed := facts.Apply(st, e, facts.Options{MaxMessages: 2})
		fds := st.ProtoReflect().Descriptor().Fields()
		for i := range fds.Len() {
			fd := fds.Get(i)
			a, b := before.ProtoReflect(), st.ProtoReflect()
			if a.Has(fd) == b.Has(fd) && (!a.Has(fd) || a.Get(fd).Equal(b.Get(fd))) {
				continue
			}
			seen |= facts.Field(string(fd.Name()))
			if changed&facts.Field(string(fd.Name())) == 0 {
				t.Errorf("%s changed %s without declaring it", e.Kind, fd.Name())
			}
		}
	}
	fds := st.ProtoReflect().Descriptor().Fields()
	for i := range fds.Len() {
		if f := facts.Field(string(fds.Get(i).Name())); seen&f == 0 {
			t.Errorf("no event in the test changes %s; extend the test", fds.Get(i).Name())
		}
	}
}

// TestEveryOtherStringIsBounded: ids, names, intents and variables longer
// than MaxFieldBytes are cut at a character boundary, in the state and the
// event, so that the rules' cost estimate holds for any input.
func TestEveryOtherStringIsBounded(t *testing.T) {
	long := strings.Repeat("ü", facts.MaxFieldBytes) // 2 bytes each
	c := evtest.New("acme", "c1")
	st := &taggingv1.RuleConversation{}
	var evs []*taggingv1.RuleEvent
	for _, e := range []*eventv1.Envelope{
		c.Event(&eventv1.ConversationStarted{BotId: long, Variables: map[string]string{long: long}}),
		c.Event(&eventv1.VariablesCaptured{Variables: map[string]string{"plan": long}}),
		c.VisitorIntent("hi", long),
		c.Event(&eventv1.FlowStarted{FlowId: long}),
		c.Event(&eventv1.FlowDropped{FlowId: long, StepId: long, NodeId: long}),
		c.Event(&eventv1.GoalReached{GoalId: long}),
	} {
		ev, _ := facts.Apply(st, e, facts.Options{})
		evs = append(evs, ev)
	}
	cut := strings.Repeat("ü", facts.MaxFieldBytes/2)
	strs := []string{st.BotId, st.Variables["plan"], st.Intents[0], st.FlowsStarted[0], st.Goals[0], st.FlowsDropped[0].NodeId,
		st.Messages[0].Intent, evs[2].Intent, evs[3].FlowId, evs[4].StepId}
	for k, v := range st.Variables {
		if k != "plan" {
			strs = append(strs, k, v)
		}
	}
	if len(st.Variables) != 2 {
		t.Fatalf("variables: %d", len(st.Variables))
	}
	for i, s := range strs {
		if s != cut {
			t.Errorf("string %d: %d bytes, want the first %d", i, len(s), len(cut))
		}
	}
}
