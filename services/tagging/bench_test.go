package tagging_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/evtest"
	"github.com/parley-dev/parley/libs/facts"
	"github.com/parley-dev/parley/libs/rules"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/tagging/internal/consumer"
	"github.com/parley-dev/parley/services/tagging/internal/outbox"
	"github.com/parley-dev/parley/services/tagging/internal/store"
	"google.golang.org/protobuf/proto"
)

// BenchmarkTaggingConsumer measures live tagging (the consumer, PostgreSQL
// and the outbox relay; real NATS and PostgreSQL) on b.N events of
// interleaved realistic conversations, published first; the clock runs from
// starting the consumer until it has acknowledged all of them.
//
// rules=10 and rules=100 (50 conversations in flight) also measure the same
// events with no rules (detectors only) and report the ratio as x-no-rules.
// rules=0,active=1000 is the shape of the full-suite load test: no rules,
// many conversations in flight, so most events are the only one of their
// conversation in a batch.
//
// Besides events/s each case reports what an event costs: cpu-us/event is
// this process's CPU (consumer, relay and the embedded NATS server) while
// the consumer runs, pg-cpu-us/event the CPU of the PostgreSQL backends
// serving this benchmark's database, and pg-stmts/event the statements sent.
// floor-cpu-us/event is the same process CPU for a consumer whose handler
// does nothing (fetch, decode, ack), measured in the same run: tagging's
// own cost is the difference.
//
//	go test ./services/tagging -run '^$' -bench TaggingConsumer -benchtime 20000x
func BenchmarkTaggingConsumer(b *testing.B) {
	for _, tc := range []struct{ rules, active int }{{0, 1000}, {10, 50}, {100, 50}} {
		name := fmt.Sprintf("rules=%d", tc.rules)
		if tc.active != 50 {
			name += fmt.Sprintf(",active=%d", tc.active)
		}
		b.Run(name, func(b *testing.B) {
			env := newBenchEnv(b)
			last := env.publish(b.N, tc.active)
			floor := env.measure(b, -1, last, "floor")
			var base cost
			if tc.rules > 0 {
				base = env.measure(b, 0, last, "base")
			}
			b.ResetTimer()
			c := env.measure(b, tc.rules, last, "rules")
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(n/c.wall.Seconds(), "events/s")
			b.ReportMetric(c.cpu.Seconds()*1e6/n, "cpu-us/event")
			b.ReportMetric(c.pgCPU.Seconds()*1e6/n, "pg-cpu-us/event")
			b.ReportMetric(float64(c.stmts)/n, "pg-stmts/event")
			b.ReportMetric(floor.cpu.Seconds()*1e6/n, "floor-cpu-us/event")
			if tc.rules > 0 {
				b.ReportMetric(n/base.wall.Seconds(), "no-rules-events/s")
				b.ReportMetric(base.wall.Seconds()/c.wall.Seconds(), "x-no-rules")
				b.ReportMetric(base.cpu.Seconds()*1e6/n, "no-rules-cpu-us/event")
				b.ReportMetric(base.pgCPU.Seconds()*1e6/n, "no-rules-pg-cpu-us/event")
			}
		})
	}
}

// BenchmarkTaggingHandle measures the live consumer's handler alone: b.N
// decoded events of interleaved conversations, handed to Handle in batches
// of 500 as the event bus would, against real PostgreSQL (no NATS, no
// relay). active is how many conversations are in flight at once (1000:
// most events are the only one of their conversation in a batch, as in the
// full-suite load test); stored, how many other conversations' rows are
// in the table already. cpu-us/event is this process's CPU per event (the handler and its
// garbage collection; decoding the envelopes, which the event bus does, is
// measured separately and left out), pg-cpu-us/event that of the
// PostgreSQL backends serving it, pg-stmts/event the statements sent.
// x-decode relates the process CPU to decoding the same envelopes
// (proto.Unmarshal), measured in the same run, so that runs on a busy
// machine can be compared; alloc-B/event and allocs/event (the handler's
// allocations) do not depend on the machine's load.
//
//	go test ./services/tagging -run '^$' -bench TaggingHandle -benchtime 20000x
func BenchmarkTaggingHandle(b *testing.B) {
	for _, tc := range []struct{ rules, active, stored int }{{0, 1000, 100_000}, {0, 1000, 0}, {0, 50, 0}, {10, 50, 0}} {
		name := fmt.Sprintf("rules=%d,active=%d", tc.rules, tc.active)
		if tc.stored > 0 {
			name += fmt.Sprintf(",stored=%d", tc.stored)
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			e := newBenchPG(b)
			// Conversations of other tenants stored before (tagging keeps a
			// row per conversation ever seen), so that tables and indexes
			// have a production-like size.
			if _, err := e.pool.Exec(ctx, `INSERT INTO tagging_conversations (tenant_id, conversation_id, applied_seq, facts, last_event)
				SELECT 'other' || (i % 20), 'conv-' || i, i, convert_to(repeat(md5(i::text), 22), 'UTF8'), '' FROM generate_series(1, $1::int) AS i`, tc.stored); err != nil {
				b.Fatal(err)
			}
			if _, err := e.pool.Exec(ctx, `ANALYZE tagging_conversations`); err != nil {
				b.Fatal(err)
			}
			for i, expr := range benchRules(tc.rules) {
				if _, err := e.st.CreateRule(ctx, store.Rule{TenantID: "acme", RuleID: fmt.Sprintf("r%d", i), Name: "r", Tag: fmt.Sprintf("t%d", i), Expression: expr, Enabled: true}, 0); err != nil {
					b.Fatal(err)
				}
			}
			var raw [][]byte
			for _, env := range benchEvents(b.N, tc.active) {
				data, err := proto.Marshal(env)
				if err != nil {
					b.Fatal(err)
				}
				raw = append(raw, data)
			}
			// Each batch is decoded just before it is handled, as the event
			// bus does; the CPU that takes is measured and left out.
			decode := func(first int, raw [][]byte) []*eventbus.Delivery {
				out := make([]*eventbus.Delivery, len(raw))
				for i, data := range raw {
					env := &eventv1.Envelope{}
					if err := proto.Unmarshal(data, env); err != nil {
						b.Fatal(err)
					}
					out[i] = &eventbus.Delivery{Envelope: env, StreamSeq: uint64(first + i + 1)}
				}
				return out
			}
			engine, err := rules.NewEngine(rules.Options{})
			if err != nil {
				b.Fatal(err)
			}
			cons := consumer.New(consumer.Config{Store: e.st, Engine: engine, Detectors: facts.DefaultSettings()})
			runtime.GC()
			pgBefore := e.backendCPU()
			stmtsBefore := e.stmts.n.Load()
			var mem0, mem1 runtime.MemStats
			runtime.ReadMemStats(&mem0)
			b.ResetTimer()
			cpuBefore := processCPU(b)
			var decodeCPU time.Duration
			var decodeAllocs, decodeBytes uint64
			start := time.Now()
			for i := 0; i < len(raw); i += 500 {
				c0 := processCPU(b)
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				ds := decode(i, raw[i:min(i+500, len(raw))])
				runtime.ReadMemStats(&m1)
				decodeAllocs += m1.Mallocs - m0.Mallocs
				decodeBytes += m1.TotalAlloc - m0.TotalAlloc
				decodeCPU += processCPU(b) - c0
				if err := cons.Apply(ctx, ds); err != nil {
					b.Fatal(err)
				}
			}
			wall := time.Since(start)
			cpu := processCPU(b) - cpuBefore - decodeCPU
			b.StopTimer()
			runtime.ReadMemStats(&mem1)
			stmts := e.stmts.n.Load() - stmtsBefore
			pgCPU := sumSince(pgBefore, e.backendCPU())
			n := float64(b.N)
			b.ReportMetric(n/wall.Seconds(), "events/s")
			b.ReportMetric(cpu.Seconds()*1e6/n, "cpu-us/event")
			b.ReportMetric(pgCPU.Seconds()*1e6/n, "pg-cpu-us/event")
			b.ReportMetric(float64(stmts)/n, "pg-stmts/event")
			b.ReportMetric(cpu.Seconds()/max(decodeCPU.Seconds(), 1e-9), "x-decode")
			b.ReportMetric(float64(mem1.TotalAlloc-mem0.TotalAlloc-decodeBytes)/n, "alloc-B/event")
			b.ReportMetric(float64(mem1.Mallocs-mem0.Mallocs-decodeAllocs)/n, "allocs/event")
		})
	}
}

// benchEvents returns n events of active interleaved conversations.
func benchEvents(n, active int) []*eventv1.Envelope {
	var convs []*benchConv
	var out []*eventv1.Envelope
	for len(out) < n {
		for len(convs) < active {
			convs = append(convs, newBenchConv(fmt.Sprintf("c%d", len(out)+len(convs))))
		}
		for j := 0; j < len(convs) && len(out) < n; j++ {
			env, done := convs[j].next()
			out = append(out, env)
			if done {
				convs[j] = newBenchConv(fmt.Sprintf("c%d-%d", len(out), j))
			}
		}
	}
	return out
}

type benchEnv struct {
	b     *testing.B
	bus   *eventbus.Bus
	pool  *pgxpool.Pool
	st    *store.Store
	stmts *stmtCounter
}

// stmtCounter counts the statements sent to PostgreSQL (each statement of a
// pipelined batch counts).
type stmtCounter struct{ n atomic.Int64 }

func (c *stmtCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}
func (c *stmtCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (c *stmtCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (c *stmtCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	c.n.Add(1)
}
func (c *stmtCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func newBenchEnv(b *testing.B) *benchEnv {
	ctx := context.Background()
	n := testenv.NATS(b)
	e := newBenchPG(b)
	bus, err := eventbus.Connect(ctx, n.URL, "bench", eventbus.Options{Producer: "ingest"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		b.Fatal(err)
	}
	e.bus = bus
	return e
}

// newBenchPG is a benchEnv with PostgreSQL only.
func newBenchPG(b *testing.B) *benchEnv {
	ctx := context.Background()
	pc, err := pgxpool.ParseConfig(testenv.Postgres(b))
	if err != nil {
		b.Fatal(err)
	}
	pc.MaxConns = 4
	if m := os.Getenv("BENCH_PLAN_CACHE_MODE"); m != "" {
		pc.ConnConfig.RuntimeParams["plan_cache_mode"] = m
	}
	stmts := &stmtCounter{}
	pc.ConnConfig.Tracer = stmts
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	if err := store.Migrate(ctx, pool, nil); err != nil {
		b.Fatal(err)
	}
	return &benchEnv{b: b, pool: pool, st: store.New(pool), stmts: stmts}
}

// publish stores n events of active interleaved conversations at a time and
// returns the last stream sequence.
func (e *benchEnv) publish(n, active int) uint64 {
	ctx := context.Background()
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

// cost is what one measurement took.
type cost struct {
	wall, cpu, pgCPU time.Duration
	stmts            int64
}

// processCPU is this process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// backendCPU is the CPU time of the PostgreSQL backends connected to the
// benchmark's database, by pid (read from /proc: PostgreSQL runs on this
// machine).
func (e *benchEnv) backendCPU() map[int]time.Duration {
	rows, err := e.pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		e.b.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		e.b.Fatal(err)
	}
	out := map[int]time.Duration{}
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue // gone meanwhile, or not visible
		}
		// Fields after the command (which is in parentheses): state is
		// field 3, utime and stime fields 14 and 15, in clock ticks (100/s).
		f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		out[int(pid)] = time.Duration(ut+st) * 10 * time.Millisecond
	}
	return out
}

func sumSince(before, after map[int]time.Duration) time.Duration {
	var d time.Duration
	for pid, a := range after {
		d += a - before[pid]
	}
	return d
}

// measure resets tagging's state, creates n rules, and returns what a new
// durable consumer takes to apply every event up to last. n < 0 measures a
// consumer whose handler does nothing.
func (e *benchEnv) measure(b *testing.B, n int, last uint64, durable string) cost {
	b.StopTimer()
	ctx := context.Background()
	if _, err := e.pool.Exec(ctx, `TRUNCATE tagging_tenants, tagging_rules, tagging_conversations, tagging_applied, tagging_outbox`); err != nil {
		b.Fatal(err)
	}
	for i, expr := range benchRules(max(n, 0)) {
		if _, err := e.st.CreateRule(ctx, store.Rule{TenantID: "acme", RuleID: fmt.Sprintf("r%d", i), Name: "r", Tag: fmt.Sprintf("t%d", i), Expression: expr, Enabled: true}, 0); err != nil {
			b.Fatal(err)
		}
	}
	engine, err := rules.NewEngine(rules.Options{})
	if err != nil {
		b.Fatal(err)
	}
	relay := outbox.New(e.st, e.bus, nil, nil)
	handle := consumer.New(consumer.Config{Store: e.st, Engine: engine, Detectors: facts.DefaultSettings(), Kick: relay.Kick}).Apply
	if n < 0 {
		handle = func(context.Context, []*eventbus.Delivery) error { return nil }
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	runtime.GC()
	pgBefore := e.backendCPU()
	stmtsBefore := e.stmts.n.Load()
	b.StartTimer()
	cpuBefore := processCPU(b)
	start := time.Now()
	go func() {
		_ = e.bus.Consume(cctx, eventbus.ConsumerConfig{Durable: durable, BatchSize: 500}, handle)
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
	c := cost{wall: time.Since(start)}
	c.cpu = processCPU(b) - cpuBefore
	b.StopTimer()
	c.stmts = e.stmts.n.Load() - stmtsBefore
	c.pgCPU = sumSince(pgBefore, e.backendCPU())
	cancel()
	<-done
	<-done
	return c
}
