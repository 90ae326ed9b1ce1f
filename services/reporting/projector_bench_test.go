package reporting_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/reporting/internal/convrow"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
	"github.com/parley-dev/parley/services/reporting/internal/projector"
	"github.com/parley-dev/parley/services/reporting/internal/schema"
	"github.com/parley-dev/parley/services/reporting/internal/statestore"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// windowProfile names CPU profiles of BenchmarkProjector's measured window
// only (setup, publishing and the baseline left out), one per mode:
// go test ./services/reporting -run '^$' -bench Projector -benchtime 100000x -args -projector.cpuprofile=/tmp/proj
var windowProfile = flag.String("projector.cpuprofile", "", "write CPU profiles of BenchmarkProjector's measured windows to `file`.consume and .handle")

// Production settings of the live projector (PARLEY_REPORTING_PROJECTOR_*).
const (
	benchBatch   = 5000
	benchMaxWait = 200 * time.Millisecond
	// benchActive conversations are in flight at once, each getting 1-3
	// events at a time, as loadgen sends them (8 senders, hundreds of
	// conversations each).
	benchActive = 2000
)

// BenchmarkProjector measures the live projector: b.N events of realistic,
// interleaved conversations (about 30 events each: start, messages with
// intents, flows, usage, debug traces, handoffs, goals, leads, lifecycle's
// end and engagement, tagging's tags) are published to a real JetStream
// first; the clock then runs until the projector has made all of them
// durable in PostgreSQL and ClickHouse.
//
//   - consume: through eventbus.Consume, as reporting runs it (batches of
//     5000, 200ms max wait), until the consumer's ack floor reaches the last
//     event. The process CPU includes the embedded NATS server.
//   - handle: Projector.Handle alone on the same events, already fetched and
//     decoded, in batches of 5000.
//
// Reported: events/s; cpu-us/event, the benchmark process's CPU time
// (getrusage, user+system) per event; ch-cpu-us/event and pg-cpu-us/event,
// the CPU time of the ClickHouse server and of the test database's
// PostgreSQL backends per event (from /proc). Baseline from the same run:
// base-* are the same figures for inserting the rows the projector writes
// (events, messages and one conversations row per conversation and batch,
// computed beforehand) straight into copies of the tables in batches of
// 5000, with no fold state and no PostgreSQL: the ClickHouse floor.
//
//	go test ./services/reporting -run '^$' -bench Projector -benchtime 50000x
func BenchmarkProjector(b *testing.B) {
	db := testenv.ClickHouse(b)
	for _, mode := range []string{"consume", "handle"} {
		b.Run(mode, func(b *testing.B) {
			b.StopTimer()
			e := newProjBench(b, db)
			e.publish(benchEvents(b.N, benchActive))
			ds := e.fetch()
			baseD, baseCPU := e.rawInsert(ds)
			p := projector.New(e.ch, statestore.New(e.pool), projector.LiveTables, slog.New(slog.DiscardHandler))
			before := e.cpu()
			if *windowProfile != "" && b.N > 1 {
				f, err := os.Create(*windowProfile + "." + mode)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					b.Fatal(err)
				}
				defer pprof.StopCPUProfile()
			}
			b.StartTimer()
			start := time.Now()
			if mode == "consume" {
				e.consume(p)
			} else {
				for i := 0; i < len(ds); i += benchBatch {
					if err := p.Handle(context.Background(), ds[i:min(i+benchBatch, len(ds))]); err != nil {
						b.Fatal(err)
					}
				}
			}
			d := time.Since(start)
			b.StopTimer()
			pprof.StopCPUProfile()
			used := e.cpu().sub(before)
			n := float64(len(ds))
			b.ReportMetric(n/d.Seconds(), "events/s")
			used.report(b, "", n)
			b.ReportMetric(n/baseD.Seconds(), "base-events/s")
			baseCPU.report(b, "base-", n)
		})
	}
}

type projBench struct {
	b    *testing.B
	db   *testenv.ClickHouseDB
	ch   driver.Conn
	pool *pgxpool.Pool
	bus  *eventbus.Bus
	last uint64
}

func newProjBench(b *testing.B, db *testenv.ClickHouseDB) *projBench {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	n := testenv.NATS(b)
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(b), MaxConns: 4})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	if err := statestore.Migrate(ctx, pool, log); err != nil {
		b.Fatal(err)
	}
	name := fmt.Sprintf("parley_bench_%d", time.Now().UnixNano())
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: db.Addr, Database: name, User: "default"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ch.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name); _ = ch.Close() })
	if err := schema.Migrate(ctx, ch, log); err != nil {
		b.Fatal(err)
	}
	for _, t := range []string{"events", "messages", "conversations"} {
		if err := ch.Exec(ctx, "CREATE TABLE "+t+"_base AS "+t); err != nil {
			b.Fatal(err)
		}
	}
	tel := testenv.Telemetry(b, "bench")
	bus, err := eventbus.Connect(ctx, n.URL, "bench", eventbus.Options{Producer: "ingest", Logger: log, TracerProvider: tel.TracerProvider, Propagator: tel.Propagator})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(ctx); err != nil {
		b.Fatal(err)
	}
	return &projBench{b: b, db: db, ch: ch, pool: pool, bus: bus}
}

// publish stores events in atomic batches of 1000, each under a trace (so
// that deliveries carry a trace id, as in production).
func (e *projBench) publish(events []*eventv1.Envelope) {
	gc := eventbus.NewGroupCommitter(e.bus, eventbus.GroupCommitOptions{})
	defer gc.Close()
	tracer := testenv.Telemetry(e.b, "bench-publisher").Tracer("bench")
	for i := 0; i < len(events); i += eventbus.MaxAtomicBatch {
		ctx, span := tracer.Start(context.Background(), "append")
		acks, err := gc.Append(ctx, events[i:min(i+eventbus.MaxAtomicBatch, len(events))])
		span.End()
		if err != nil {
			e.b.Fatal(err)
		}
		e.last = acks[len(acks)-1].Sequence
	}
}

// fetch reads every stored event back as deliveries.
func (e *projBench) fetch() []*eventbus.Delivery {
	var out []*eventbus.Delivery
	_, err := e.bus.Replay(context.Background(), 1, e.last, benchBatch, nil, func(_ context.Context, ds []*eventbus.Delivery) error {
		out = append(out, ds...)
		return nil
	})
	if err != nil {
		e.b.Fatal(err)
	}
	return out
}

// consume runs the projector as reporting does until every event is
// acknowledged.
func (e *projBench) consume(p *projector.Projector) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- e.bus.Consume(ctx, eventbus.ConsumerConfig{Durable: projector.Durable, BatchSize: benchBatch, MaxWait: benchMaxWait}, p.Handle)
	}()
	defer func() { cancel(); <-done }()
	js := e.bus.JetStream()
	for {
		if c, err := js.Consumer(ctx, eventbus.ConvStream, projector.Durable); err == nil {
			if info, err := c.Info(ctx); err == nil && info.AckFloor.Stream >= e.last && info.NumAckPending == 0 {
				return
			}
		}
		select {
		case err := <-done:
			e.b.Fatalf("consumer stopped: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// rawInsert writes the rows the projector would write for ds straight into
// the *_base tables and returns the time and CPU that took.
func (e *projBench) rawInsert(ds []*eventbus.Delivery) (time.Duration, cpuTimes) {
	type chunk struct {
		rows  projector.Rows
		convs [][]any
	}
	var chunks []chunk
	states := map[string]*convstate.State{}
	for i := 0; i < len(ds); i += benchBatch {
		var c chunk
		touched := map[*convstate.State]bool{}
		var order []*convstate.State
		for _, d := range ds[i:min(i+benchBatch, len(ds))] {
			traceID := ""
			if d.SpanContext.IsValid() {
				traceID = d.SpanContext.TraceID().String()
			}
			c.rows.Add(d.Envelope, d.StreamSeq, traceID)
			k := d.Envelope.TenantId + "/" + d.Envelope.ConversationId
			st := states[k]
			if st == nil {
				st = convstate.New(d.Envelope.TenantId, d.Envelope.ConversationId)
				states[k] = st
			}
			if st.Apply(d.Envelope, d.StreamSeq) && !touched[st] {
				touched[st] = true
				order = append(order, st)
			}
		}
		for _, st := range order {
			c.convs = append(c.convs, convrow.Values(st))
		}
		chunks = append(chunks, c)
	}
	ctx := context.Background()
	insert := func(query string, n int, row func(i int) []any) {
		bt, err := e.ch.PrepareBatch(ctx, query)
		if err != nil {
			e.b.Fatal(err)
		}
		for i := range n {
			if err := bt.Append(row(i)...); err != nil {
				e.b.Fatal(err)
			}
		}
		if err := bt.Send(); err != nil {
			e.b.Fatal(err)
		}
	}
	before := e.cpu()
	start := time.Now()
	for _, c := range chunks {
		insert(`INSERT INTO events_base (tenant_id, conversation_id, event_id, kind, stream_seq, occurred_at, occurred_at_us, recorded_at, producer, causation_id, correlation_id, trace_id, payload_json)`,
			len(c.rows.Events), func(i int) []any {
				r := c.rows.Events[i]
				return []any{r.TenantID, r.ConversationID, r.EventID, r.Kind, r.StreamSeq, r.OccurredAt, r.OccurredAtUS, r.RecordedAt, r.Producer, r.CausationID, r.CorrelationID, r.TraceID, r.PayloadJSON}
			})
		insert(`INSERT INTO messages_base (tenant_id, conversation_id, event_id, message_id, role, text, intent, intent_confidence, unidentified, flow_id, node_id, agent_id, response_time_ms, paid, occurred_at, occurred_at_us, recorded_at, stream_seq, trace_id)`,
			len(c.rows.Messages), func(i int) []any {
				r := c.rows.Messages[i]
				return []any{r.TenantID, r.ConversationID, r.EventID, r.MessageID, r.Role, r.Text, r.Intent, r.IntentConfidence, r.Unidentified, r.FlowID, r.NodeID, r.AgentID, r.ResponseTimeMS, r.Paid, r.OccurredAt, r.OccurredAtUS, r.RecordedAt, r.StreamSeq, r.TraceID}
			})
		insert(`INSERT INTO conversations_base (`+convrow.Names()+`)`, len(c.convs), func(i int) []any { return c.convs[i] })
	}
	return time.Since(start), e.cpu().sub(before)
}

// cpuTimes are CPU times used by the benchmark process, the ClickHouse
// server and the test database's PostgreSQL backends.
type cpuTimes struct{ self, ch, pg time.Duration }

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{self: c.self - o.self, ch: c.ch - o.ch, pg: c.pg - o.pg}
}

func (c cpuTimes) report(b *testing.B, prefix string, n float64) {
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / n }
	b.ReportMetric(us(c.self), prefix+"cpu-us/event")
	b.ReportMetric(us(c.ch), prefix+"ch-cpu-us/event")
	b.ReportMetric(us(c.pg), prefix+"pg-cpu-us/event")
}

func (e *projBench) cpu() cpuTimes {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		e.b.Fatal(err)
	}
	c := cpuTimes{self: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ch: procCPU(e.db.Server.Pid())}
	rows, err := e.pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE datname = current_database()`)
	if err != nil {
		e.b.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			e.b.Fatal(err)
		}
		c.pg += procCPU(pid)
	}
	return c
}

// procCPU is a process's user+system CPU time from /proc (0 when unknown).
func procCPU(pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ
}

// benchEvents returns n events of conversations that run interleaved,
// active at a time, each advancing by 1-3 events per turn.
func benchEvents(n, active int) []*eventv1.Envelope {
	r := rand.New(rand.NewPCG(7, 11))
	base := time.Now().Add(-2 * time.Hour).UTC()
	var convs [][]*eventv1.Envelope
	next := 0
	out := make([]*eventv1.Envelope, 0, n)
	for len(out) < n {
		for len(convs) < active {
			convs = append(convs, benchConversation(r, next, base.Add(time.Duration(next)*time.Millisecond)))
			next++
		}
		i := r.IntN(len(convs))
		k := min(1+r.IntN(3), len(convs[i]), n-len(out))
		out = append(out, convs[i][:k]...)
		if convs[i] = convs[i][k:]; len(convs[i]) == 0 {
			convs[i] = convs[len(convs)-1]
			convs = convs[:len(convs)-1]
		}
	}
	return out
}

// benchConversation scripts one conversation, in the spirit of loadgen's
// generated scenarios plus what lifecycle and tagging add.
func benchConversation(r *rand.Rand, i int, at time.Time) []*eventv1.Envelope {
	tenant := []string{"acme", "acme", "acme", "globex", "globex", "initech", "umbrella"}[r.IntN(7)]
	id := "bench-" + strconv.Itoa(i)
	var out []*eventv1.Envelope
	add := func(producer string, gap time.Duration, p func(e *eventv1.Envelope)) {
		at = at.Add(gap)
		e := &eventv1.Envelope{EventId: eventbus.NewEventID(), TenantId: tenant, ConversationId: id, OccurredAt: timestamppb.New(at),
			Producer: producer, ClientEventId: "e" + strconv.Itoa(len(out)+1)}
		p(e)
		out = append(out, e)
	}
	chance := func(p float64) bool { return r.Float64() < p }
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	channel := []eventv1.Channel{eventv1.Channel_CHANNEL_WEB_WIDGET, eventv1.Channel_CHANNEL_WEB_WIDGET, eventv1.Channel_CHANNEL_WHATSAPP, eventv1.Channel_CHANNEL_TELEGRAM, eventv1.Channel_CHANNEL_API}[r.IntN(5)]
	web := channel == eventv1.Channel_CHANNEL_WEB_WIDGET
	started := &eventv1.ConversationStarted{
		BotId: pick("support-bot", "sales-bot", "booking-bot"), Channel: channel, Type: eventv1.ConversationType_CONVERSATION_TYPE_LIVE,
		Platform: eventv1.Platform_PLATFORM_APP,
		Visitor: &eventv1.Visitor{Token: "vis-" + strconv.Itoa(r.IntN(5000)), DisplayName: pick("Gentle Otter 52", "Brave Lynx 7", "Quiet Heron 19"),
			Locale: pick("en-US", "de-DE", "fr-FR")},
		Location: &eventv1.Location{Country: pick("DE", "FR", "US", "GB"), Region: pick("BE", "IDF", "MA"), City: pick("Berlin", "Paris", "Boston", "London")},
	}
	if web {
		started.Platform = eventv1.Platform_PLATFORM_DESKTOP
		started.PageUrl = pick("https://shop.example/", "https://shop.example/pricing", "https://shop.example/help/orders")
		started.Referrer = "https://www.google.com/"
		started.Visitor.UserAgent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
		started.Visitor.Ip = "203.0.113." + strconv.Itoa(r.IntN(250))
	}
	if chance(0.3) {
		started.Variables = map[string]string{"name": pick("Sam", "Alex", "Kim"), "plan": pick("free", "pro", "enterprise")}
	}
	add("ingest", 0, func(e *eventv1.Envelope) {
		e.Payload = &eventv1.Envelope_ConversationStarted{ConversationStarted: started}
	})
	if web && chance(0.4) {
		add("ingest", 5*time.Second, func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_PageViewed{PageViewed: &eventv1.PageViewed{Url: "https://shop.example/cart", Title: "Cart"}}
		})
	}
	msg := func(gap time.Duration, m *eventv1.MessagePosted) {
		add("ingest", gap, func(e *eventv1.Envelope) {
			m.MessageId = e.ClientEventId
			e.Payload = &eventv1.Envelope_MessagePosted{MessagePosted: m}
		})
	}
	flow := pick("order_status", "change_address", "refund", "book_table")
	steps := []string{"ask", "lookup", "confirm"}
	total := 3 + r.IntN(18)
	completes := chance(0.6)
	step := 0
	llm := chance(0.5)
	for m := 0; m < total; m += 2 {
		unidentified := chance(0.12)
		intent := &eventv1.Intent{Name: flow, Confidence: 0.7 + 0.29*r.Float64()}
		text := pick("Hello, where is my order 12345?", "Can I change the delivery address?", "I would like a refund for my last purchase", "table for two tomorrow at 8pm please")
		if unidentified {
			intent, text = &eventv1.Intent{Name: "nlu_fallback", Confidence: 0.2}, "asdf qwerty"
		}
		msg(time.Duration(3+r.IntN(30))*time.Second, &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text, Intent: intent})
		if m+1 >= total {
			break
		}
		bm := &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, ResponseTimeMs: uint32(300 + r.IntN(2200)),
			Text: pick("Let me check that order for you.", "It ships tomorrow. Anything else?", "Sure, what is the new address?", "Done! Your request is registered."), NodeId: "answer"}
		switch {
		case unidentified:
			bm.Text, bm.Unidentified, bm.NodeId = "Sorry, I did not understand that.", true, "fallback"
		case step < len(steps):
			if step == 0 {
				add("ingest", 200*time.Millisecond, func(e *eventv1.Envelope) {
					e.Payload = &eventv1.Envelope_FlowStarted{FlowStarted: &eventv1.FlowStarted{FlowId: flow, FlowName: flow}}
				})
			}
			bm.FlowId, bm.NodeId = flow, "n-"+steps[step]
		}
		if channel == eventv1.Channel_CHANNEL_WHATSAPP && chance(0.5) {
			bm.Paid = true
		}
		msg(time.Second, bm)
		if !unidentified && step < len(steps) {
			s := steps[step]
			add("ingest", 10*time.Millisecond, func(e *eventv1.Envelope) {
				e.Payload = &eventv1.Envelope_FlowStep{FlowStep: &eventv1.FlowStep{FlowId: flow, StepId: s, NodeId: "n-" + s}}
			})
			if step == 1 && chance(0.5) {
				add("ingest", 10*time.Millisecond, func(e *eventv1.Envelope) {
					e.Payload = &eventv1.Envelope_VariablesCaptured{VariablesCaptured: &eventv1.VariablesCaptured{Variables: map[string]string{"order_id": strconv.Itoa(r.IntN(100000))}}}
				})
			}
			if step++; step == len(steps) && completes {
				add("ingest", 10*time.Millisecond, func(e *eventv1.Envelope) {
					e.Payload = &eventv1.Envelope_FlowCompleted{FlowCompleted: &eventv1.FlowCompleted{FlowId: flow}}
				})
				if chance(0.5) {
					add("ingest", 10*time.Millisecond, func(e *eventv1.Envelope) {
						e.Payload = &eventv1.Envelope_GoalReached{GoalReached: &eventv1.GoalReached{GoalId: "purchase", Name: "Purchase", ValueMicros: 25_000_000, Currency: "USD"}}
					})
				}
			}
		}
		if llm {
			add("ingest", 5*time.Millisecond, func(e *eventv1.Envelope) {
				e.Payload = &eventv1.Envelope_UsageRecorded{UsageRecorded: &eventv1.UsageRecorded{Model: "gpt-4o-mini", InputTokens: uint64(500 + r.IntN(1500)), OutputTokens: uint64(50 + r.IntN(300)), CostMicros: int64(100 + r.IntN(3000))}}
			})
		}
		if chance(0.25) {
			add("ingest", 5*time.Millisecond, func(e *eventv1.Envelope) {
				e.Payload = &eventv1.Envelope_DebugTrace{DebugTrace: &eventv1.DebugTrace{Steps: []*eventv1.DebugStep{
					{Name: "nlu", Detail: "intent=" + intent.Name, DurationMs: 40}, {Name: "policy", Detail: "node=" + bm.NodeId, DurationMs: 3}}}}
			})
		}
		if unidentified && chance(0.5) {
			add("tagging", 50*time.Millisecond, func(e *eventv1.Envelope) {
				e.Payload = &eventv1.Envelope_IssueDetected{IssueDetected: &eventv1.IssueDetected{Issue: "unidentified-response", Detector: "unidentified"}}
			})
		}
	}
	if step > 0 && step < len(steps) || !completes && step > 0 {
		add("ingest", 30*time.Second, func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_FlowDropped{FlowDropped: &eventv1.FlowDropped{FlowId: flow, StepId: steps[max(step-1, 0)], NodeId: "n-" + steps[max(step-1, 0)]}}
		})
	}
	if chance(0.08) {
		add("ingest", 10*time.Second, func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_LeadCaptured{LeadCaptured: &eventv1.LeadCaptured{Email: "someone@example.com"}}
		})
	}
	if chance(0.1) {
		add("ingest", 5*time.Second, func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_HandoffRequested{HandoffRequested: &eventv1.HandoffRequested{}}
		})
		add("ingest", 40*time.Second, func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_AgentJoined{AgentJoined: &eventv1.AgentJoined{AgentId: "ann", AgentName: "Ann"}}
		})
		msg(20*time.Second, &eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, Text: "Hi, Ann here. How can I help?", AgentId: "ann", ResponseTimeMs: 20000})
	}
	if chance(0.3) {
		add("tagging", time.Second, func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_TagApplied{TagApplied: &eventv1.TagApplied{Tag: pick("refund", "order", "vip"), RuleId: "r1"}}
		})
	}
	if chance(0.7) {
		add("ingest", 10*time.Second, func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_ConversationClosed{ConversationClosed: &eventv1.ConversationClosed{ClosedBy: eventv1.Actor_ACTOR_VISITOR}}
		})
		add("lifecycle", 50*time.Millisecond, func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_ConversationEnded{ConversationEnded: &eventv1.ConversationEnded{Reason: eventv1.EndReason_END_REASON_VISITOR_CLOSED}}
		})
		add("lifecycle", 10*time.Millisecond, func(e *eventv1.Envelope) {
			e.Payload = &eventv1.Envelope_EngagementClassified{EngagementClassified: &eventv1.EngagementClassified{Engagement: eventv1.Engagement_ENGAGEMENT_ENGAGED, Resolved: chance(0.5)}}
		})
	}
	return out
}
