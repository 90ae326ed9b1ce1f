package tagging_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/tagging/internal/consumer"
	"github.com/parley-dev/parley/services/tagging/internal/evtest"
	"github.com/parley-dev/parley/services/tagging/internal/facts"
	"github.com/parley-dev/parley/services/tagging/internal/outbox"
	"github.com/parley-dev/parley/services/tagging/internal/rules"
	"github.com/parley-dev/parley/services/tagging/internal/store"
)

// BenchmarkTaggingConsumer measures events/s through live tagging (the
// consumer, PostgreSQL and the outbox relay; real NATS and PostgreSQL) with
// 10 and 100 enabled rules. b.N events of interleaved realistic
// conversations are published first; the clock runs from starting the
// consumer until it has acknowledged all of them. Each run also measures the
// same events with no rules (detectors only) and reports the ratio as
// x-no-rules.
//
//	go test ./services/tagging -run '^$' -bench TaggingConsumer -benchtime 20000x
func BenchmarkTaggingConsumer(b *testing.B) {
	for _, n := range []int{10, 100} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			env := newBenchEnv(b)
			last := env.publish(b.N)
			base := env.measure(b, 0, last, "base")
			b.ResetTimer()
			d := env.measure(b, n, last, "rules")
			b.StopTimer()
			eps, baseEPS := float64(b.N)/d.Seconds(), float64(b.N)/base.Seconds()
			b.ReportMetric(eps, "events/s")
			b.ReportMetric(baseEPS, "no-rules-events/s")
			b.ReportMetric(eps/baseEPS, "x-no-rules")
		})
	}
}

type benchEnv struct {
	b    *testing.B
	bus  *eventbus.Bus
	pool *pgxpool.Pool
	st   *store.Store
}

func newBenchEnv(b *testing.B) *benchEnv {
	ctx := context.Background()
	n := testenv.NATS(b)
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(b), MaxConns: 4})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool, nil); err != nil {
		b.Fatal(err)
	}
	bus, err := eventbus.Connect(ctx, n.URL, "bench", eventbus.Options{Producer: "ingest"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		b.Fatal(err)
	}
	return &benchEnv{b: b, bus: bus, pool: pool, st: store.New(pool)}
}

// publish stores n events of 50 interleaved conversations at a time and
// returns the last stream sequence.
func (e *benchEnv) publish(n int) uint64 {
	ctx := context.Background()
	const active = 50
	var convs []*benchConv
	var last uint64
	for i := 0; i < n; {
		for len(convs) < active {
			convs = append(convs, newBenchConv(fmt.Sprintf("c%d", i+len(convs))))
		}
		for j := 0; j < len(convs) && i < n; j++ {
			env, done := convs[j].next()
			ack, err := e.bus.Publish(ctx, env)
			if err != nil {
				e.b.Fatal(err)
			}
			last = ack.Sequence
			i++
			if done {
				convs[j] = newBenchConv(fmt.Sprintf("c%d-%d", i, j))
			}
		}
	}
	return last
}

// benchConv is a scripted conversation of about 20 events: start, a few
// exchanges with intents, a fallback, a flow, usage, sometimes a handoff,
// and the end.
type benchConv struct {
	c      *evtest.Conv
	script []func() *eventv1.Envelope
}

func newBenchConv(id string) *benchConv {
	c := evtest.New("acme", id)
	bc := &benchConv{c: c}
	bc.script = []func() *eventv1.Envelope{
		func() *eventv1.Envelope {
			return c.Event(&eventv1.ConversationStarted{BotId: "support", Channel: eventv1.Channel_CHANNEL_WEB_WIDGET,
				Platform: eventv1.Platform_PLATFORM_DESKTOP, Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE,
				Variables: map[string]string{"plan": "pro", "name": "Ann"}})
		},
		func() *eventv1.Envelope { return c.Bot("Hi! How can I help you today?", 0) },
		func() *eventv1.Envelope { return c.VisitorIntent("Hello, where is my order 12345?", "order_status") },
		func() *eventv1.Envelope { return c.Event(&eventv1.FlowStarted{FlowId: "order_status"}) },
		func() *eventv1.Envelope { return c.Bot("Let me check that order for you.", 850) },
		func() *eventv1.Envelope {
			return c.Event(&eventv1.FlowStep{FlowId: "order_status", StepId: "lookup", NodeId: "api"})
		},
		func() *eventv1.Envelope {
			return c.Event(&eventv1.UsageRecorded{Model: "m", InputTokens: 900, OutputTokens: 120, CostMicros: 1800})
		},
		func() *eventv1.Envelope { return c.Bot("It ships tomorrow. Anything else?", 1200) },
		func() *eventv1.Envelope {
			return c.VisitorIntent("Can I change the delivery address?", "change_address")
		},
		func() *eventv1.Envelope { return c.Fallback("Sorry, I did not understand that.") },
		func() *eventv1.Envelope { return c.Visitor("change the address of the delivery please") },
		func() *eventv1.Envelope { return c.Bot("Sure, what is the new address?", 700) },
		func() *eventv1.Envelope { return c.Visitor("Main Street 1, Springfield") },
		func() *eventv1.Envelope {
			return c.Event(&eventv1.VariablesCaptured{Variables: map[string]string{"address": "Main Street 1"}})
		},
		func() *eventv1.Envelope { return c.Event(&eventv1.FlowCompleted{FlowId: "order_status"}) },
		func() *eventv1.Envelope { return c.Bot("Done! Your address is updated.", 900) },
		func() *eventv1.Envelope {
			return c.Event(&eventv1.UsageRecorded{Model: "m", InputTokens: 1500, OutputTokens: 200, CostMicros: 3000})
		},
		func() *eventv1.Envelope { return c.Visitor("thanks, bye") },
		func() *eventv1.Envelope { return c.Ended(eventv1.EndReason_END_REASON_VISITOR_CLOSED) },
		func() *eventv1.Envelope {
			return c.Event(&eventv1.EngagementClassified{Engagement: eventv1.Engagement_ENGAGEMENT_COMPLETED, VisitorMessages: 5})
		},
	}
	return bc
}

func (bc *benchConv) next() (*eventv1.Envelope, bool) {
	f := bc.script[0]
	bc.script = bc.script[1:]
	return f(), len(bc.script) == 0
}

// benchRules returns n rules built from the condition kinds of the issue,
// with varying constants (most do not match, so they run on every event).
func benchRules(n int) []string {
	words := []string{"refund", "cancel", "complaint", "invoice", "password", "discount", "warranty", "broken", "delay", "manager"}
	templates := []func(i int, w string) string{
		func(_ int, w string) string {
			return fmt.Sprintf(`conversation.messages.exists(m, m.role == "visitor" && m.text.matches("(?i)%s"))`, w)
		},
		func(_ int, w string) string { return fmt.Sprintf(`%q in conversation.intents`, w) },
		func(i int, _ string) string { return fmt.Sprintf(`conversation.unidentified_count >= %d`, 2+i%5) },
		func(_ int, _ string) string {
			return `conversation.handoff_requested && conversation.agent_messages == 0`
		},
		func(_ int, _ string) string { return `conversation.ended && !conversation.visitor_replied` },
		func(_ int, w string) string {
			return fmt.Sprintf(`conversation.flows_dropped.exists(f, f.node_id == %q)`, w)
		},
		func(i int, _ string) string { return fmt.Sprintf(`conversation.max_response_ms > %d`, 5000+i*100) },
		func(_ int, w string) string {
			return fmt.Sprintf(`has(conversation.variables.plan) && conversation.variables.plan == %q`, w)
		},
		func(_ int, w string) string {
			return fmt.Sprintf(`conversation.channel == "whatsapp" && conversation.bot_id == %q`, w)
		},
		func(i int, _ string) string { return fmt.Sprintf(`conversation.cost_micros > %d`, 100000+i) },
	}
	var out []string
	for i := range n {
		out = append(out, templates[i%len(templates)](i, words[(i/len(templates))%len(words)]))
	}
	return out
}

// measure resets tagging's state, creates n rules, and returns how long a
// new durable consumer takes to apply every event up to last.
func (e *benchEnv) measure(b *testing.B, n int, last uint64, durable string) time.Duration {
	b.StopTimer()
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `TRUNCATE tagging_tenants, tagging_rules, tagging_conversations, tagging_applied, tagging_outbox`); err != nil {
		b.Fatal(err)
	}
	for i, expr := range benchRules(n) {
		if _, err := e.st.CreateRule(ctx, store.Rule{TenantID: "acme", RuleID: fmt.Sprintf("r%d", i), Name: "r", Tag: fmt.Sprintf("t%d", i), Expression: expr, Enabled: true}); err != nil {
			b.Fatal(err)
		}
	}
	engine, err := rules.NewEngine(rules.Options{})
	if err != nil {
		b.Fatal(err)
	}
	relay := outbox.New(e.st, e.bus, nil, nil)
	cons := consumer.New(consumer.Config{Store: e.st, Engine: engine, Detectors: facts.DefaultSettings(), Kick: relay.Kick})
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	b.StartTimer()
	start := time.Now()
	go func() {
		_ = e.bus.Consume(cctx, eventbus.ConsumerConfig{Durable: durable, BatchSize: 500}, cons.Handle)
		done <- struct{}{}
	}()
	go func() { _ = relay.Run(cctx, time.Second); done <- struct{}{} }()
	js := e.bus.JetStream()
	for {
		if c, err := js.Consumer(ctx, eventbus.ConvStream, durable); err == nil {
			if info, err := c.Info(ctx); err == nil && info.AckFloor.Stream >= last {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	d := time.Since(start)
	b.StopTimer()
	cancel()
	<-done
	<-done
	return d
}
