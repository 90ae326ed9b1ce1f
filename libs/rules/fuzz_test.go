package rules_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/rules"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
)

// FuzzCompile feeds random expressions to the compiler: it never panics,
// every failure is a *CompileError with a position, and whatever compiles
// evaluates within the cost limit without panicking.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		`conversation.unidentified_count >= 3`,
		`conversation.messages.exists(m, m.role == "visitor" && m.text.matches("(?i)refund|money back"))`,
		`"order_status" in conversation.intents`,
		`has(conversation.variables.plan) && conversation.variables.plan == "pro"`,
		`conversation.flows_dropped.exists(f, f.node_id == "payment")`,
		`event.kind == "message_posted" && event.text.lowerAscii().contains("human")`,
		`conversation.cost_micros > 50000 || conversation.max_response_ms > 30000.0`,
		`conversation.messages.filter(m, m.role == "bot").size() > 2`,
		`"a,b".split(",").size() == 2`,
		`conversation.messages.map(m, m.text).join(" ").matches("x")`,
		`1 +`, `)(`, `"\xff"`, `[[[[[[[[[[`, `a.b.c.d`, `size(conversation.variables) / 0 == 1`,
	} {
		f.Add(s)
	}
	e, err := rules.NewEngine(rules.Options{CostLimit: 100_000})
	if err != nil {
		f.Fatal(err)
	}
	c := &taggingv1.RuleConversation{
		BotId: "support", Channel: "web_widget", VisitorMessages: 2, UnidentifiedCount: 1,
		Variables: map[string]string{"plan": "pro"}, Intents: []string{"greet", "order_status"},
		Messages:     []*taggingv1.RuleMessage{{Role: "visitor", Text: "where is my order?"}, {Role: "bot", Text: "Let me check", ResponseMs: 900}},
		FlowsDropped: []*taggingv1.RuleFlowDrop{{FlowId: "checkout", NodeId: "payment"}},
	}
	ev := &taggingv1.RuleEvent{Kind: "message_posted", Role: "bot", Text: "Let me check"}
	f.Fuzz(func(t *testing.T, expr string) {
		prg, err := e.Compile(expr)
		if err != nil {
			var ce *rules.CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("%q: error is %T, not *CompileError: %v", expr, err, err)
			}
			if ce.Line < 1 || ce.Column < 1 || ce.Message == "" {
				t.Fatalf("%q: error without a position: %+v", expr, ce)
			}
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = prg.Eval(ctx, rules.NewInput(c, ev))
	})
}
