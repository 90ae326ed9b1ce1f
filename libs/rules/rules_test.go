package rules_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/rules"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"google.golang.org/protobuf/proto"
)

func engine(t testing.TB, o rules.Options) *rules.Engine {
	t.Helper()
	e, err := rules.NewEngine(o)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// fold builds a conversation's facts from events, returning the last event.
func fold(envs ...*eventv1.Envelope) (*taggingv1.RuleConversation, *taggingv1.RuleEvent) {
	c := &taggingv1.RuleConversation{}
	var ev *taggingv1.RuleEvent
	for _, e := range envs {
		ev, _ = facts.Apply(c, e, facts.Options{})
	}
	return c, ev
}

// scenarios are conversations the condition kinds are tested on.
func scenarios() map[string][]*eventv1.Envelope {
	out := map[string][]*eventv1.Envelope{}

	c := evtest.New("acme", "refund")
	out["refund"] = []*eventv1.Envelope{
		c.Started("support"),
		c.VisitorIntent("Hi, I want my MONEY back for order 42", "refund_request"),
		c.Bot("Sorry to hear that. Let me check.", 800),
		c.Event(&eventv1.UsageRecorded{Model: "gpt", InputTokens: 1200, OutputTokens: 300, CostMicros: 30_000}),
		c.Event(&eventv1.UsageRecorded{Model: "gpt", InputTokens: 800, OutputTokens: 200, CostMicros: 25_000}),
	}

	c = evtest.New("acme", "bot-says-refund")
	out["bot-says-refund"] = []*eventv1.Envelope{
		c.Started("support"),
		c.Visitor("hello"),
		c.Bot("You can ask for a refund or your money back anytime.", 500),
	}

	c = evtest.New("acme", "fallbacks")
	out["fallbacks"] = []*eventv1.Envelope{
		c.Visitor("blorp"), c.Fallback("Sorry, I did not get that."),
		c.Visitor("zzz"), c.Fallback("Sorry, I did not get that."),
		c.VisitorIntent("where is my order", "order_status"), c.Fallback("Sorry?"),
	}

	c = evtest.New("acme", "handoff")
	out["handoff"] = []*eventv1.Envelope{
		c.Event(&eventv1.ConversationStarted{BotId: "sales", Channel: eventv1.Channel_CHANNEL_WHATSAPP,
			Platform: eventv1.Platform_PLATFORM_MOBILE_WEB, Type: eventv1.ConversationType_CONVERSATION_TYPE_TEST,
			Variables: map[string]string{"plan": "pro", "country": "DE"}}),
		c.Visitor("talk to sales please"),
		c.Event(&eventv1.HandoffRequested{Reason: "asked", Queue: "sales"}),
		c.Event(&eventv1.OperatorNoResponse{WaitedSeconds: 120}),
	}

	c = evtest.New("acme", "agent")
	out["agent"] = []*eventv1.Envelope{
		c.Started("support"),
		c.Visitor("help"),
		c.Event(&eventv1.HandoffRequested{Reason: "asked"}),
		c.Event(&eventv1.AgentJoined{AgentId: "a1", AgentName: "Ann"}),
		c.Agent("Hi, Ann here", 45_000),
		c.Event(&eventv1.VariablesCaptured{Variables: map[string]string{"plan": "free"}}),
	}

	c = evtest.New("acme", "silent")
	out["silent"] = []*eventv1.Envelope{
		c.Started("support"),
		c.Bot("Hi! How can I help?", 0),
		c.Ended(eventv1.EndReason_END_REASON_STALE_TIMEOUT),
	}

	c = evtest.New("acme", "dropped")
	out["dropped"] = []*eventv1.Envelope{
		c.Started("shop"),
		c.Event(&eventv1.FlowStarted{FlowId: "checkout"}),
		c.Event(&eventv1.FlowStep{FlowId: "checkout", StepId: "s2", NodeId: "payment"}),
		c.Visitor("ok"),
		c.Event(&eventv1.FlowDropped{FlowId: "checkout", StepId: "s2", NodeId: "payment"}),
		c.Event(&eventv1.FlowStarted{FlowId: "faq"}),
		c.Event(&eventv1.FlowCompleted{}),
		c.Event(&eventv1.GoalReached{GoalId: "newsletter"}),
	}
	return out
}

// TestConditionKinds covers every condition kind the issue lists, each as a
// CEL expression over facts folded from events.
func TestConditionKinds(t *testing.T) {
	e := engine(t, rules.Options{})
	sc := scenarios()
	for _, tc := range conditionCases() {
		t.Run(tc.kind, func(t *testing.T) {
			prg, err := e.Compile(tc.expr)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			for name, envs := range sc {
				c, ev := fold(envs...)
				got, _ := prg.Eval(context.Background(), rules.NewInput(c, ev))
				want := false
				for _, m := range tc.match {
					want = want || m == name
				}
				if got != want {
					t.Errorf("%s on %q: got %v, want %v", tc.expr, name, got, want)
				}
			}
		})
	}
}

type conditionCase struct {
	kind, expr string
	match      []string // scenarios that match; all others must not
}

func conditionCases() []conditionCase {
	return []conditionCase{
		{"keywords by role", `conversation.messages.exists(m, m.role == "visitor" && (m.text.lowerAscii().contains("refund") || m.text.lowerAscii().contains("money back")))`, []string{"refund"}},
		{"keywords any role", `conversation.messages.exists(m, m.text.lowerAscii().contains("money back"))`, []string{"refund", "bot-says-refund"}},
		{"regex by role", `conversation.messages.exists(m, m.role == "visitor" && m.text.matches("(?i)money\\s+back|refund"))`, []string{"refund"}},
		{"regex on the current event", `event.kind == "message_posted" && event.role == "bot" && event.text.matches("(?i)refund")`, []string{"bot-says-refund"}},
		{"intent is", `"refund_request" in conversation.intents`, []string{"refund"}},
		{"intent of a visitor message", `conversation.messages.exists(m, m.role == "visitor" && m.intent == "order_status")`, []string{"fallbacks"}},
		{"intent is not", `conversation.visitor_replied && !("refund_request" in conversation.intents) && !("order_status" in conversation.intents)`, []string{"bot-says-refund", "handoff", "agent", "dropped"}},
		{"unidentified count >= 3", `conversation.unidentified_count >= 3`, []string{"fallbacks"}},
		{"unidentified count >= 4", `conversation.unidentified_count >= 4`, nil},
		{"handoff happened", `conversation.handoff_requested`, []string{"handoff", "agent"}},
		{"agent joined", `conversation.agent_joined`, []string{"agent"}},
		{"no agent answered", `conversation.handoff_requested && conversation.agent_messages == 0`, []string{"handoff"}},
		{"operator no response", `conversation.operator_no_response`, []string{"handoff"}},
		{"visitor never replied", `!conversation.visitor_replied`, []string{"silent"}},
		{"visitor never replied (count)", `conversation.visitor_messages == 0 && conversation.bot_messages > 0`, []string{"silent"}},
		{"flow dropped at node", `conversation.flows_dropped.exists(f, f.flow_id == "checkout" && f.node_id == "payment")`, []string{"dropped"}},
		{"flow completed", `"faq" in conversation.flows_completed && "newsletter" in conversation.goals`, []string{"dropped"}},
		{"response time above threshold", `conversation.max_response_ms > 30000`, []string{"agent"}},
		{"agent response time", `conversation.messages.exists(m, m.role == "agent" && m.response_ms > 30000)`, []string{"agent"}},
		{"variable value", `has(conversation.variables.plan) && conversation.variables.plan == "pro"`, []string{"handoff"}},
		{"variable value by index", `conversation.variables["plan"] == "free"`, []string{"agent"}}, // missing key: error, no match
		{"variable absent", `!has(conversation.variables.plan) && conversation.visitor_replied`, []string{"refund", "bot-says-refund", "fallbacks", "dropped"}},
		{"channel", `conversation.channel == "whatsapp"`, []string{"handoff"}},
		{"bot", `conversation.bot_id in ["shop", "sales"]`, []string{"handoff", "dropped"}},
		{"platform", `conversation.platform == "mobile_web"`, []string{"handoff"}},
		{"type", `conversation.type == "test"`, []string{"handoff"}},
		{"cost above threshold", `conversation.cost_micros > 50000`, []string{"refund"}},
		{"tokens", `conversation.input_tokens + conversation.output_tokens >= 2500`, []string{"refund"}},
		{"ended by stale timeout", `conversation.ended && conversation.end_reason == "stale_timeout"`, []string{"silent"}},
	}
}

// TestSkippingUnchangedRulesIsExact: evaluating a rule only after events
// that changed what it reads (and once fully at the start) finds the same
// first match as evaluating it after every event.
func TestSkippingUnchangedRulesIsExact(t *testing.T) {
	e := engine(t, rules.Options{})
	exprs := []string{`true`, `event.kind == "flow_step" && conversation.visitor_messages > 1`,
		`[conversation].exists(c, c.goals.size() > 0)`, `conversation.events >= 7`}
	for _, tc := range conditionCases() {
		exprs = append(exprs, tc.expr)
	}
	seqs := scenarios()
	rnd := rand.New(rand.NewPCG(1, 2))
	var all []*eventv1.Envelope
	for _, k := range slices.Sorted(maps.Keys(seqs)) {
		all = append(all, seqs[k]...)
	}
	for i := range 200 {
		c := evtest.New("acme", fmt.Sprintf("r%d", i))
		var seq []*eventv1.Envelope
		for range 5 + rnd.IntN(30) {
			src := all[rnd.IntN(len(all))]
			env := c.Event(&eventv1.ConversationStarted{}) // fresh id and time
			env.Payload, env.Kind = proto.Clone(src).(*eventv1.Envelope).Payload, src.Kind
			seq = append(seq, env)
		}
		seqs[fmt.Sprintf("random-%d", i)] = seq
	}
	for _, expr := range exprs {
		prg, err := e.Compile(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		for name, envs := range seqs {
			full, skip := -1, -1
			cf, cs := &taggingv1.RuleConversation{}, &taggingv1.RuleConversation{}
			evaluated := false
			for i, env := range envs {
				ev, changed := facts.Apply(cf, env, facts.Options{})
				if ok, _ := prg.Eval(context.Background(), rules.NewInput(cf, ev)); ok && changed != 0 && full < 0 {
					full = i
				}
				ev, changed = facts.Apply(cs, env, facts.Options{})
				if changed != 0 && (!evaluated || prg.Needs(changed)) {
					evaluated = true
					if ok, _ := prg.Eval(context.Background(), rules.NewInput(cs, ev)); ok && skip < 0 {
						skip = i
					}
				}
			}
			if full != skip {
				t.Errorf("%s on %s: first match after event %d when evaluated every time, %d when skipping", expr, name, full, skip)
			}
		}
	}
}

func TestCompileErrorsPointAtTheProblem(t *testing.T) {
	e := engine(t, rules.Options{MaxExpressionBytes: 200})
	cases := []struct {
		expr      string
		line, col int
		msg       string
	}{
		{`conversation.unidentifed_count > 2`, 1, 13, "undefined field 'unidentifed_count'"},
		{"conversation.visitor_replied &&\n  conversation.messages.exists(m, m.text.matches(\"(?i\"))", 2, 50, "invalid regular expression"},
		{`conversation.bot_id`, 1, 1, "must evaluate to a bool"},
		{`conversation.unidentified_count >=`, 1, 35, "Syntax error"},
		{`visitor.text == "x"`, 1, 1, "undeclared reference to 'visitor'"},
		{`conversation.bot_id == 3`, 1, 21, "no matching overload"},
		{``, 1, 1, "empty"},
		{strings.Repeat("true && ", 30) + "true", 1, 1, "the limit is 200"},
		{"[1].all(a, [2].all(b, [3].all(c, true)))", 1, 30, "nesting"},
		{`conversation.messages.exists(m, m.text.matches("(a|b|c|d){1000}"))`, 1, 1, "program size"},
		{`timestamp("2024-01-01T10:00:00Z").getHours("Mars/Olympus") == 10`, 1, 44, "unknown time zone \"Mars/Olympus\""},
		{`timestamp("2024-01-01T10:00:00Z").getDayOfWeek("+25:00") == 1`, 1, 48, "unknown time zone"},
		{`timestamp("10000-01-01T00:00:00Z") > timestamp("2024-01-01T00:00:00Z")`, 1, 1, "timestamp"},
	}
	for _, tc := range cases {
		_, err := e.Compile(tc.expr)
		var ce *rules.CompileError
		if !errors.As(err, &ce) {
			t.Errorf("%q: want a CompileError, got %v", tc.expr, err)
			continue
		}
		if ce.Line != tc.line || (tc.col != 1 && ce.Column != tc.col) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: got %d:%d %q, want %d:%d containing %q", tc.expr, ce.Line, ce.Column, ce.Message, tc.line, tc.col, tc.msg)
		}
	}
}

// TestValidTimeZonesCompile: what CEL's accessors accept compiles.
func TestValidTimeZonesCompile(t *testing.T) {
	e := engine(t, rules.Options{})
	for _, tz := range []string{"Europe/Berlin", "UTC", "America/Argentina/Buenos_Aires", "+02:00", "-23:59", "05:30"} {
		if _, err := e.Compile(`timestamp("2024-01-01T10:00:00Z").getHours("` + tz + `") >= 0`); err != nil {
			t.Errorf("%s: %v", tz, err)
		}
	}
}

func TestCostLimitStopsRunawayEvaluation(t *testing.T) {
	// The estimate assumes one message; the input has 50, so only the
	// limit at evaluation can stop it.
	e := engine(t, rules.Options{CostLimit: 2000, MaxMessages: 1})
	c := &taggingv1.RuleConversation{}
	for range 50 {
		c.Messages = append(c.Messages, &taggingv1.RuleMessage{Role: "visitor", Text: strings.Repeat("lorem ipsum ", 300)})
	}
	prg, err := e.Compile(`conversation.messages.exists(m, m.text.matches("(a|b|c)+z$"))`)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := prg.Eval(context.Background(), rules.NewInput(c, nil))
	if ok || err == nil || !strings.Contains(err.Error(), "cost limit") {
		t.Fatalf("want the cost limit to stop it, got %v %v", ok, err)
	}
	// The same expression fits the default limit.
	e = engine(t, rules.Options{})
	prg, _ = e.Compile(`conversation.messages.exists(m, m.text.matches("(a|b|c)+z$"))`)
	if ok, err := prg.Eval(context.Background(), rules.NewInput(c, nil)); ok || err != nil {
		t.Fatalf("default limit: %v %v", ok, err)
	}
}

func TestEvaluationIsCancellable(t *testing.T) {
	e := engine(t, rules.Options{CostLimit: 1 << 62})
	c := &taggingv1.RuleConversation{}
	for range 50 {
		c.Messages = append(c.Messages, &taggingv1.RuleMessage{Text: "x"})
	}
	prg, err := e.Compile(`conversation.messages.all(a, conversation.messages.all(b, a.text == b.text))`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if ok, err := prg.Eval(ctx, rules.NewInput(c, nil)); ok || err == nil {
		t.Fatalf("cancelled evaluation: %v %v", ok, err)
	}
}

// TestWorstCaseCostIsRefusedBeforeRunning: expressions whose estimated cost
// over the largest inputs exceeds the limit are refused by Compile (so they
// never run and never allocate), naming the estimate and the limit;
// ordinary rules pass.
func TestWorstCaseCostIsRefusedBeforeRunning(t *testing.T) {
	e := engine(t, rules.Options{})
	refused := []string{
		// Each replace multiplies the text's size: 16 KiB * 16 KiB, then again.
		`event.text.replace("", event.text).replace("", event.text).contains("x")`,
		// 50 texts of 4 KiB joined, then grown 60-fold twice.
		`conversation.messages.map(m, m.text).join("").replace("a", "` + strings.Repeat("a", 60) + `").replace("a", "` + strings.Repeat("a", 60) + `").size() > 0`,
		// A regular expression on a concatenation of every message pair.
		`conversation.messages.exists(a, conversation.messages.exists(b, (a.text + b.text + event.text).matches("(a|b)+c")))`,
	}
	for _, expr := range refused {
		_, err := e.Compile(expr)
		var ce *rules.CompileError
		if !errors.As(err, &ce) || !strings.Contains(ce.Message, "estimated worst-case cost") || !strings.Contains(ce.Message, "limit of 1000000") {
			t.Errorf("%s: want a CompileError with the estimate and the limit, got %v", expr, err)
		}
	}
	ordinary := []string{
		`conversation.messages.filter(m, m.role == "visitor").map(m, m.text).join(" ").contains("refund")`,
		`conversation.messages.filter(m, m.role == "visitor").size() > 3`,
		`event.text.lowerAscii().replace("-", " ").contains("money back")`,
	}
	for _, tc := range conditionCases() {
		ordinary = append(ordinary, tc.expr)
	}
	for _, expr := range ordinary {
		if _, err := e.Compile(expr); err != nil {
			t.Errorf("%s: %v", expr, err)
		}
	}
	// A cheap expression over the same inputs passes; with a lower limit it
	// does not.
	cheap := `conversation.messages.exists(m, m.text.matches("(?i)refund"))`
	if _, err := e.Compile(cheap); err != nil {
		t.Fatal(err)
	}
	if _, err := engine(t, rules.Options{CostLimit: 100}).Compile(cheap); err == nil || !strings.Contains(err.Error(), "limit of 100 ") {
		t.Fatalf("limit 100: %v", err)
	}
}

// TestEstimateBoundsTheActualCost: an accepted expression, evaluated on the
// largest input the estimate assumes, stays within the limit.
func TestEstimateBoundsTheActualCost(t *testing.T) {
	e := engine(t, rules.Options{})
	c := &taggingv1.RuleConversation{}
	for range facts.DefaultMaxMessages {
		c.Messages = append(c.Messages, &taggingv1.RuleMessage{Role: "visitor", Text: strings.Repeat("a", facts.MaxTextBytes)})
	}
	ev := &taggingv1.RuleEvent{Text: strings.Repeat("b", rules.DefaultEventTextBytes)}
	for _, expr := range []string{
		`conversation.messages.exists(m, m.text.matches("(a|b)+c$"))`,
		`conversation.messages.exists(m, m.text.lowerAscii().contains("refund"))`,
		`event.text.matches("(?i)refund") || event.text.upperAscii().contains("X")`,
		`conversation.messages.filter(m, m.role == "visitor").map(m, m.text).join(" ").contains("refund")`,
	} {
		prg, err := e.Compile(expr)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		if _, err := prg.Eval(context.Background(), rules.NewInput(c, ev)); err != nil {
			t.Errorf("%s on the largest input: %v", expr, err)
		}
	}
}
