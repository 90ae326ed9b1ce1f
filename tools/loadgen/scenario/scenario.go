// Package scenario generates realistic conversation traffic for Parley's
// ingest API: many tenants and bots, channels and platforms, flows that
// complete or drop off, unidentified responses, takeovers by live agents,
// goals, leads, costs, and conversations that are closed or left open.
//
// It is pure and deterministic: Generator.Conversation(i) depends only on the
// Options and i, so a seed reproduces a run exactly, whatever the order or
// concurrency in which conversations are generated. It does no I/O and reads
// no clock.
package scenario

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Options configure a Generator.
type Options struct {
	// Tenants receive conversations, the first ones more than the later ones
	// (weights 1, 1/2, 1/3, ...). Required.
	Tenants []string
	// Bots per tenant (default 3). Bot k serves one of the catalogue's
	// domains (support, sales, booking, faq) in turn.
	Bots int
	// Seed makes the scenarios reproducible.
	Seed int64
	// RunID prefixes conversation ids: conversation i is "<RunID>-<i>"
	// (default "lg"). Subject-safe characters only.
	RunID string
	// Start is the earliest occurred_at; conversations start spread over
	// [Start, Start+Spread) and end by Start+Spread. Required.
	Start time.Time
	// Spread is the window over which conversations start (default 1h). A
	// conversation longer than the window is compressed to fit it.
	Spread time.Duration
	// CloseFraction is the share of conversations the client closes with
	// conversation_closed (0..1); the others are left open.
	CloseFraction float64
}

// Conversation is one generated conversation: its events in the order they
// must be sent, each with conversation_id, client_event_id, occurred_at
// (strictly increasing) and a payload. tenant_id is left empty (ingest takes
// it from the API key).
type Conversation struct {
	Index  int
	Tenant string
	ID     string
	BotID  string
	Events []*eventv1.Envelope
	// Closed tells whether the last event is a conversation_closed.
	Closed bool
}

// Generator makes conversations.
type Generator struct {
	opts Options
	cat  *catalog
}

// New validates opts and returns a generator.
func New(opts Options) (*Generator, error) {
	if len(opts.Tenants) == 0 {
		return nil, errors.New("scenario: at least one tenant is required")
	}
	if opts.Bots <= 0 {
		opts.Bots = 3
	}
	if opts.RunID == "" {
		opts.RunID = "lg"
	}
	if !ValidRunID(opts.RunID) {
		return nil, fmt.Errorf("scenario: run id %q: use 1-40 of A-Z a-z 0-9 _ -", opts.RunID)
	}
	if opts.Spread <= 0 {
		opts.Spread = time.Hour
	}
	if earliest := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC); opts.Start.Before(earliest) { // ingest's limit
		return nil, fmt.Errorf("scenario: start %s is before %s", opts.Start.Format(time.RFC3339), earliest.Format(time.DateOnly))
	}
	opts.CloseFraction = math.Min(math.Max(opts.CloseFraction, 0), 1)
	return &Generator{opts: opts, cat: newCatalog()}, nil
}

// ValidRunID reports whether id can prefix conversation ids: 1-40 of
// A-Z a-z 0-9 _ - (conversation ids are NATS subject tokens).
func ValidRunID(id string) bool {
	if len(id) == 0 || len(id) > 40 {
		return false
	}
	for _, r := range id {
		if !(r == '_' || r == '-' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// Latest is the latest occurred_at any conversation can have.
func (g *Generator) Latest() time.Time { return Latest(g.opts.Start, g.opts.Spread) }

// Latest is the latest occurred_at a conversation placed with Place can have.
func Latest(start time.Time, spread time.Duration) time.Time {
	return start.Truncate(time.Microsecond).Add(spread)
}

// PickTenant chooses a tenant with weights 1, 1/2, 1/3, ... so that a few
// tenants are busy and many are quiet.
func PickTenant(r *rand.Rand, tenants []string) string {
	total := 0.0
	for k := range tenants {
		total += 1 / float64(k+1)
	}
	x := r.Float64() * total
	for k, t := range tenants {
		x -= 1 / float64(k+1)
		if x < 0 {
			return t
		}
	}
	return tenants[len(tenants)-1]
}

// Rand returns the random source of conversation i for a seed (PCG, so
// independent of Go's global source and stable across releases).
func Rand(seed int64, i int) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), uint64(i)))
}

// Place sets occurred_at of events from their offsets relative to the
// conversation's start. Conversation i starts at Start + frac(i·φ)·(Spread −
// length), a low-discrepancy sequence that spreads any number of
// conversations evenly and puts conversation 0 at Start, so every event lies
// in [Start, Start+Spread]. A conversation longer than Spread is compressed to
// fit. Offsets must be non-decreasing; the placed times are strictly
// increasing, at least 1µs apart (ClickHouse orders by microseconds).
func Place(events []*eventv1.Envelope, offsets []time.Duration, start time.Time, spread time.Duration, i int) {
	if len(events) == 0 {
		return
	}
	start = start.Truncate(time.Microsecond)
	length := offsets[len(offsets)-1]
	scale := 1.0
	var at time.Duration
	if length > spread {
		scale = float64(spread) / float64(length)
	} else {
		_, frac := math.Modf(float64(i) * (math.Sqrt(5) - 1) / 2)
		at = time.Duration(frac * float64(spread-length)).Truncate(time.Microsecond)
	}
	prev := -time.Microsecond
	for k, e := range events {
		off := at + time.Duration(float64(offsets[k])*scale).Truncate(time.Microsecond)
		off = max(off, prev+time.Microsecond)
		prev = off
		e.OccurredAt = timestamppb.New(start.Add(off))
	}
}

// builder appends events to a conversation's timeline.
type builder struct {
	r       *rand.Rand
	conv    string
	events  []*eventv1.Envelope
	offsets []time.Duration
	t       time.Duration
	msgs    int
}

// add appends env gap after the previous event (at least 1ms, so that the
// timeline is strictly increasing) and returns it.
func (b *builder) add(gap time.Duration, env *eventv1.Envelope) *eventv1.Envelope {
	if len(b.events) > 0 {
		b.t += max(gap, time.Millisecond)
	}
	env.ConversationId = b.conv
	env.ClientEventId = "e" + strconv.Itoa(len(b.events)+1)
	b.events = append(b.events, env)
	b.offsets = append(b.offsets, b.t)
	return env
}

// message appends a message and returns its message id.
func (b *builder) message(gap time.Duration, m *eventv1.MessagePosted) string {
	b.msgs++
	m.MessageId = "m" + strconv.Itoa(b.msgs)
	b.add(gap, &eventv1.Envelope{Payload: &eventv1.Envelope_MessagePosted{MessagePosted: m}})
	return m.MessageId
}

// between returns a random duration in [lo, hi).
func between(r *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(r.Int64N(int64(hi-lo)))
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func chance(r *rand.Rand, p float64) bool { return r.Float64() < p }

// pickChannel chooses a channel with the relative frequencies of live traffic.
func pickChannel(r *rand.Rand) eventv1.Channel {
	x := r.IntN(100)
	switch {
	case x < 45:
		return eventv1.Channel_CHANNEL_WEB_WIDGET
	case x < 65:
		return eventv1.Channel_CHANNEL_WHATSAPP
	case x < 73:
		return eventv1.Channel_CHANNEL_TELEGRAM
	case x < 81:
		return eventv1.Channel_CHANNEL_FACEBOOK
	case x < 89:
		return eventv1.Channel_CHANNEL_API
	case x < 94:
		return eventv1.Channel_CHANNEL_SMS
	case x < 97:
		return eventv1.Channel_CHANNEL_SKYPE
	default:
		return eventv1.Channel_CHANNEL_VOICE
	}
}

// BotID names bot k of a tenant in generated mode.
func (g *Generator) BotID(k int) string {
	d := g.cat.domains[k%len(g.cat.domains)]
	if n := k / len(g.cat.domains); n > 0 {
		return d.name + "-bot-" + strconv.Itoa(n+1)
	}
	return d.name + "-bot"
}

// Conversation returns conversation i. It is a pure function of the options
// and i.
func (g *Generator) Conversation(i int) Conversation {
	r := Rand(g.opts.Seed, i)
	c := g.cat
	tenant := PickTenant(r, g.opts.Tenants)
	botIdx := r.IntN(g.opts.Bots)
	dom := c.domains[botIdx%len(c.domains)]
	conv := Conversation{Index: i, Tenant: tenant, ID: g.opts.RunID + "-" + strconv.Itoa(i), BotID: g.BotID(botIdx)}
	b := &builder{r: r, conv: conv.ID}

	// Where and who.
	ctype := eventv1.ConversationType_CONVERSATION_TYPE_LIVE
	channel := pickChannel(r)
	if chance(r, 0.06) {
		ctype = eventv1.ConversationType_CONVERSATION_TYPE_TEST
		if chance(r, 0.7) {
			channel = eventv1.Channel_CHANNEL_TEST_CHAT
		}
	}
	web := channel == eventv1.Channel_CHANNEL_WEB_WIDGET || channel == eventv1.Channel_CHANNEL_TEST_CHAT
	started := &eventv1.ConversationStarted{
		BotId: conv.BotID, Channel: channel, Type: ctype,
		// Returning visitors: tokens repeat within a tenant. The display
		// name is left for ingest to derive from the token.
		Visitor: &eventv1.Visitor{Token: "vis-" + strconv.Itoa(r.IntN(200+i/2)), Locale: pick(r, c.locales)},
	}
	switch {
	case web && chance(r, 0.45):
		started.Platform = eventv1.Platform_PLATFORM_MOBILE_WEB
	case web:
		started.Platform = eventv1.Platform_PLATFORM_DESKTOP
	case channel == eventv1.Channel_CHANNEL_API || channel == eventv1.Channel_CHANNEL_VOICE:
	default:
		started.Platform = eventv1.Platform_PLATFORM_APP
	}
	if web {
		started.PageUrl = pick(r, c.pages)
		started.Referrer = pick(r, c.referrers)
		started.Visitor.UserAgent = pick(r, c.userAgents)
	}
	if chance(r, 0.3) { // pre-chat form
		started.Variables = map[string]string{"name": pick(r, []string{"Sam", "Alex", "Kim", "Jo", "Robin"}), "plan": pick(r, []string{"free", "pro", "enterprise"})}
	}
	b.add(0, &eventv1.Envelope{Payload: &eventv1.Envelope_ConversationStarted{ConversationStarted: started}})
	if web && chance(r, 0.4) {
		b.add(between(r, 2*time.Second, 20*time.Second), &eventv1.Envelope{Payload: &eventv1.Envelope_PageViewed{PageViewed: &eventv1.PageViewed{
			Url: pick(r, c.pages), Title: "Shop", Referrer: started.PageUrl}}})
	}

	// The bot part: alternating visitor and bot messages around one flow.
	flow := pick(r, dom.flows)
	total := 3 + r.IntN(18) // visitor and bot messages, 3..20
	maxSteps := len(flow.steps)
	completes := chance(r, 0.6)
	if !completes && maxSteps > 1 {
		maxSteps = 1 + r.IntN(maxSteps-1) // drop off before the last step
	}
	llm := botIdx%2 == 0
	whatsapp := channel == eventv1.Channel_CHANNEL_WHATSAPP
	var (
		flowStarted, flowDone bool
		step, paid, botMsgs   int
		lastVisitor           string
		informed              bool
	)
	if chance(r, 0.4) { // the bot greets first
		b.message(between(r, 500*time.Millisecond, 3*time.Second), &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, Text: pick(r, c.greetings), NodeId: "greeting"})
		botMsgs++
	}
	for b.msgs < total {
		// Visitor.
		vm := &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR}
		unidentified := chance(r, 0.12)
		informed = false
		switch {
		case unidentified:
			vm.Text = pick(r, c.gibberish)
			vm.Intent = &eventv1.Intent{Name: "nlu_fallback", Confidence: 0.1 + 0.3*r.Float64()}
		case !flowStarted:
			vm.Text = pick(r, flow.asks)
			vm.Intent = &eventv1.Intent{Name: flow.intent, Confidence: 0.7 + 0.29*r.Float64()}
		case !flowDone && flow.slot != "" && chance(r, 0.6):
			vm.Text = pick(r, flow.values)
			vm.Intent = &eventv1.Intent{Name: "inform", Confidence: 0.6 + 0.39*r.Float64()}
			informed = true
		default:
			f := pick(r, c.followUps)
			vm.Text, vm.Intent = f.text, &eventv1.Intent{Name: f.intent, Confidence: 0.5 + 0.49*r.Float64()}
		}
		if flowStarted && !flowDone {
			vm.FlowId = flow.id
		}
		lastVisitor = b.message(between(r, 3*time.Second, 40*time.Second), vm)
		if b.msgs >= total {
			break // the visitor had the last word
		}

		// Bot.
		rt := between(r, 300*time.Millisecond, 2500*time.Millisecond)
		bm := &eventv1.MessagePosted{Role: eventv1.Role_ROLE_BOT, ResponseTimeMs: uint32(rt / time.Millisecond), ReplyToMessageId: lastVisitor}
		if whatsapp && chance(r, 0.5) {
			bm.Paid = true
			paid++
		}
		var afterBot []*eventv1.Envelope
		switch {
		case unidentified:
			bm.Text, bm.Unidentified, bm.NodeId = pick(r, c.fallbacks), true, "fallback"
		case !flowStarted || (!flowDone && step < maxSteps):
			if !flowStarted {
				flowStarted = true
				b.add(rt/2, &eventv1.Envelope{Payload: &eventv1.Envelope_FlowStarted{FlowStarted: &eventv1.FlowStarted{FlowId: flow.id, FlowName: flow.name}}})
				rt -= rt / 2
			} else if informed && flow.slot != "" {
				b.add(rt/2, &eventv1.Envelope{Payload: &eventv1.Envelope_VariablesCaptured{VariablesCaptured: &eventv1.VariablesCaptured{
					Variables: map[string]string{flow.slot: pick(r, flow.values)}, Source: eventv1.VariableSource_VARIABLE_SOURCE_EXTRACTED}}})
				rt -= rt / 2
			}
			s := flow.steps[step]
			bm.Text, bm.FlowId, bm.NodeId = flow.answers[step%len(flow.answers)], flow.id, "n-"+s
			afterBot = append(afterBot, &eventv1.Envelope{Payload: &eventv1.Envelope_FlowStep{FlowStep: &eventv1.FlowStep{FlowId: flow.id, StepId: s, NodeId: "n-" + s}}})
			step++
			if step == len(flow.steps) && completes {
				flowDone = true
				afterBot = append(afterBot, &eventv1.Envelope{Payload: &eventv1.Envelope_FlowCompleted{FlowCompleted: &eventv1.FlowCompleted{FlowId: flow.id}}})
				if flow.goal != "" && chance(r, 0.85) {
					gr := &eventv1.GoalReached{GoalId: flow.goal, Name: flow.name}
					if flow.value > 0 {
						gr.ValueMicros, gr.Currency = flow.value, "USD"
					}
					afterBot = append(afterBot, &eventv1.Envelope{Payload: &eventv1.Envelope_GoalReached{GoalReached: gr}})
				}
			}
		default:
			bm.Text, bm.NodeId = "Is there anything else I can help you with?", "anything_else"
			if flowStarted && !flowDone {
				bm.Text, bm.FlowId, bm.NodeId = "Let's continue where we were.", flow.id, "n-"+flow.steps[step-1]
			}
		}
		b.message(rt, bm)
		botMsgs++
		for _, e := range afterBot {
			b.add(between(r, time.Millisecond, 50*time.Millisecond), e)
		}
		if chance(r, 0.25) {
			steps := []*eventv1.DebugStep{
				{Name: "nlu", Detail: "intent=" + vm.Intent.GetName(), DurationMs: uint32(20 + r.IntN(200))},
				{Name: "policy", Detail: "node=" + bm.NodeId, DurationMs: uint32(1 + r.IntN(30))},
			}
			if bm.FlowId != "" {
				steps = append(steps, &eventv1.DebugStep{Name: "action:" + bm.NodeId, DurationMs: uint32(10 + r.IntN(900)), Error: chance(r, 0.05)})
			}
			b.add(between(r, time.Millisecond, 20*time.Millisecond), &eventv1.Envelope{Payload: &eventv1.Envelope_DebugTrace{DebugTrace: &eventv1.DebugTrace{MessageId: lastVisitor, Steps: steps}}})
		}
	}
	if flowStarted && !flowDone {
		s := flow.steps[max(step-1, 0)]
		b.add(between(r, 5*time.Second, 60*time.Second), &eventv1.Envelope{Payload: &eventv1.Envelope_FlowDropped{FlowDropped: &eventv1.FlowDropped{
			FlowId: flow.id, StepId: s, NodeId: "n-" + s, Failed: chance(r, 0.25)}}})
	}
	leadChance := 0.08
	if dom.name == "sales" {
		leadChance = 0.4
	}
	if chance(r, leadChance) {
		name := pick(r, []string{"Sam Lee", "Alex Kim", "Jo Smith", "Robin Diaz", "Mina Rossi"})
		b.add(between(r, 2*time.Second, 15*time.Second), &eventv1.Envelope{Payload: &eventv1.Envelope_LeadCaptured{LeadCaptured: &eventv1.LeadCaptured{
			LeadId: "lead-" + conv.ID, Name: name, Email: fmt.Sprintf("lead%d@example.com", i), Phone: fmt.Sprintf("+4930%07d", r.IntN(10_000_000)),
			Fields: map[string]string{"company": pick(r, []string{"Acme Corp", "Globex", "Initech"})}}}})
	}
	if llm || paid > 0 {
		u := &eventv1.UsageRecorded{PaidMessages: uint32(paid)}
		if llm {
			m := pick(r, c.models)
			u.Model = m.name
			u.InputTokens = uint64(botMsgs * (200 + r.IntN(1800)))
			u.OutputTokens = uint64(botMsgs * (30 + r.IntN(300)))
			u.CostMicros = (int64(u.InputTokens)*m.inMicros + int64(u.OutputTokens)*m.outMicros) / 1000
		}
		if paid > 0 {
			u.CostMicros += int64(paid) * 8_000 // channel fee per paid message
		}
		u.Currency = "USD"
		b.add(between(r, 10*time.Millisecond, 500*time.Millisecond), &eventv1.Envelope{Payload: &eventv1.Envelope_UsageRecorded{UsageRecorded: u}})
	}

	// A live agent takes over.
	agentHere := false
	var ag agent
	if chance(r, 0.15) {
		requestedBy := eventv1.Actor_ACTOR_VISITOR
		if chance(r, 0.4) {
			requestedBy = eventv1.Actor_ACTOR_BOT
		}
		b.add(between(r, 2*time.Second, 20*time.Second), &eventv1.Envelope{Payload: &eventv1.Envelope_HandoffRequested{HandoffRequested: &eventv1.HandoffRequested{
			Reason: pick(r, c.handoffReasons), Queue: dom.queue, RequestedBy: requestedBy}}})
		if chance(r, 0.85) {
			ag = pick(r, c.agents)
			agentHere = true
			wait := between(r, 10*time.Second, 180*time.Second)
			b.add(wait, &eventv1.Envelope{Payload: &eventv1.Envelope_AgentJoined{AgentJoined: &eventv1.AgentJoined{AgentId: ag.id, AgentName: ag.name}}})
			n := 2 + r.IntN(5)
			sinceVisitor := wait
			for k := range n {
				if k%2 == 0 {
					gap := between(r, 5*time.Second, 90*time.Second)
					text := pick(r, c.agentLines)
					if k == 0 {
						text = "Hi, this is " + ag.name + ". I'm taking over from the bot."
					}
					b.message(gap, &eventv1.MessagePosted{Role: eventv1.Role_ROLE_AGENT, Text: text, AgentId: ag.id, ResponseTimeMs: uint32((sinceVisitor + gap) / time.Millisecond)})
				} else {
					sinceVisitor = between(r, 5*time.Second, 60*time.Second)
					b.message(sinceVisitor, &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: pick(r, c.visitorToAgent)})
					sinceVisitor = 0
				}
			}
		}
	}
	if chance(r, 0.03) {
		b.add(between(r, time.Second, 10*time.Second), &eventv1.Envelope{Payload: &eventv1.Envelope_MarkerAdded{MarkerAdded: &eventv1.MarkerAdded{Marker: "vip", AddedBy: "crm-sync"}}})
	}

	// The end: closed by someone, or left open.
	conv.Closed = chance(r, g.opts.CloseFraction)
	closedBy := eventv1.Actor_ACTOR_VISITOR
	switch {
	case agentHere && chance(r, 0.75):
		closedBy = eventv1.Actor_ACTOR_AGENT
	case chance(r, 0.45):
		closedBy = eventv1.Actor_ACTOR_BOT
	}
	if agentHere && !(conv.Closed && closedBy == eventv1.Actor_ACTOR_AGENT) {
		b.add(between(r, 5*time.Second, 30*time.Second), &eventv1.Envelope{Payload: &eventv1.Envelope_AgentLeft{AgentLeft: &eventv1.AgentLeft{AgentId: ag.id}}})
	}
	if conv.Closed {
		b.add(between(r, 2*time.Second, 30*time.Second), &eventv1.Envelope{Payload: &eventv1.Envelope_ConversationClosed{ConversationClosed: &eventv1.ConversationClosed{ClosedBy: closedBy}}})
	}
	Place(b.events, b.offsets, g.opts.Start, g.opts.Spread, i)
	conv.Events = b.events
	return conv
}
