package loadgen

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/tools/loadgen/scenario"
	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

const (
	// streamBatches is how many requests one AppendStream call carries.
	streamBatches = 4
	// callTimeout bounds one attempt of a call.
	callTimeout = 30 * time.Second
	// retryBudget bounds the retries of one call; an event log that stays
	// unavailable longer ends the run.
	retryBudget = 60 * time.Second
	// singleWindow is how many conversations a worker interleaves in single
	// mode.
	singleWindow = 4
)

// runner is the state of one Run shared by its workers.
type runner struct {
	cfg     Config
	client  ingestv1.IngestServiceClient
	src     *source
	limiter *rate.Limiter
	acks    *ackWriter
	lat     *histogram
	start   time.Time
	// stopCtx ends when no more requests may start.
	stopCtx  context.Context
	throttle throttle
	c        counters
}

func (r *runner) stats() Stats {
	return Stats{
		Conversations: r.c.conversations.Load(), Events: r.c.events.Load(), Acked: r.c.acked.Load(),
		Duplicates: r.c.duplicates.Load(), Errors: r.c.errors.Load(), Messages: r.c.messages.Load(), Closes: r.c.closes.Load(),
		Elapsed: time.Since(r.start), AckP50: r.lat.quantile(0.5), AckP99: r.lat.quantile(0.99),
	}
}

// active is a conversation in flight.
type active struct {
	conv *scenario.Conversation
	// next is the first event not yet acknowledged.
	next int
	// abandoned conversations get no more events.
	abandoned bool
}

// item is one event of a planned call.
type item struct {
	a   *active
	idx int
}

func (it item) env() *eventv1.Envelope { return it.a.conv.Events[it.idx] }

// worker sends the events of its own conversations; no other worker touches
// them, which keeps each conversation's events in order.
type worker struct {
	r        *runner
	rng      *rand.Rand
	window   int // conversations in flight per tenant served
	byTenant map[string][]*active
	order    []string // tenants with conversations in flight, round robin
	rr       int
	n        int
}

func newWorker(r *runner, id int) *worker {
	// About BatchSize conversations per tenant, at 1-3 events each, fill a
	// request in one pass.
	window := r.cfg.BatchSize
	if r.cfg.Mode == ModeSingle {
		window = singleWindow
	}
	return &worker{r: r, rng: rand.New(rand.NewPCG(uint64(r.cfg.Seed), uint64(1e9+id))), window: window, byTenant: map[string][]*active{}}
}

func (w *worker) stopping() bool { return w.r.stopCtx.Err() != nil }

// refill takes new conversations from the source, a few at a time so that
// workers share a small run and traffic ramps up over a few calls.
func (w *worker) refill() {
	// The window grows with the tenants the worker serves (requests are per
	// tenant), up to four times its base.
	limit := w.window * min(max(len(w.order), 1), 4)
	for k := max(w.window/4, 2); k > 0 && w.n < limit; k-- {
		c := w.r.src.take()
		if c == nil {
			return
		}
		if len(c.Events) == 0 {
			continue
		}
		if len(w.byTenant[c.Tenant]) == 0 {
			w.order = append(w.order, c.Tenant)
		}
		w.byTenant[c.Tenant] = append(w.byTenant[c.Tenant], &active{conv: c})
		w.n++
	}
}

// prune drops finished and abandoned conversations.
func (w *worker) prune() {
	order := w.order[:0]
	for _, t := range w.order {
		list := w.byTenant[t][:0]
		for _, a := range w.byTenant[t] {
			if a.abandoned || a.next >= len(a.conv.Events) {
				w.n--
				continue
			}
			list = append(list, a)
		}
		w.byTenant[t] = list
		if len(list) > 0 {
			order = append(order, t)
		}
	}
	w.order = order
}

func (w *worker) run(ctx context.Context) error {
	for {
		if !w.stopping() {
			w.refill()
		}
		if w.n == 0 || w.stopping() {
			return nil
		}
		w.rr = (w.rr + 1) % len(w.order)
		tenant := w.order[w.rr]
		reqs := w.plan(tenant)
		err := w.r.execute(ctx, tenant, reqs)
		w.prune()
		if err != nil {
			return err
		}
	}
}

// plan builds the requests of one call for a tenant: each takes a short run
// of consecutive events (1-3) from each conversation in flight, up to the
// batch size, as a bot runtime would send what happened in its
// conversations since its last call. A stream call carries several requests; a conversation's events in
// later requests follow its events in earlier ones. Closes go only into a
// stream's last request: ingest refuses every event of an ended conversation
// (before it deduplicates), so a stream cut short after an earlier request
// had ended a conversation could not be resent.
func (w *worker) plan(tenant string) [][]item {
	list := w.byTenant[tenant]
	pos := make(map[*active]int, len(list))
	for _, a := range list {
		pos[a] = a.next
	}
	n := 1
	if w.r.cfg.Mode == ModeStream {
		n = streamBatches
	}
	var reqs [][]item
	offset := w.rng.IntN(len(list))
	for k := range n {
		closes := k == n-1
		var req []item
		for j := range list {
			a := list[(offset+j)%len(list)]
			for take := min(1+w.rng.IntN(3), w.r.cfg.BatchSize-len(req)); take > 0 && pos[a] < len(a.conv.Events); take-- {
				if !closes && a.conv.Events[pos[a]].GetConversationClosed() != nil {
					break
				}
				req = append(req, item{a, pos[a]})
				pos[a]++
			}
		}
		if len(req) > 0 {
			reqs = append(reqs, req)
		}
	}
	return reqs
}

// execute sends a call, retrying it on transient errors, and applies the
// results. It returns an error only when the run must stop.
func (r *runner) execute(ctx context.Context, tenant string, reqs [][]item) error {
	total := 0
	for _, q := range reqs {
		total += len(q)
	}
	if r.limiter != nil {
		if err := r.limiter.WaitN(r.stopCtx, total); err != nil {
			return nil // stopping: nothing was sent
		}
	}
	r.c.events.Add(uint64(total))
	callCtx := metadata.AppendToOutgoingContext(context.WithoutCancel(ctx), "authorization", "Bearer "+r.cfg.Keys[tenant])
	began := time.Now()
	backoff := 50 * time.Millisecond
	for {
		r.throttle.wait()
		t0 := time.Now()
		results, err := r.call(callCtx, reqs)
		if err == nil {
			r.lat.record(time.Since(t0))
			r.apply(tenant, reqs, results)
			return nil
		}
		st := status.Convert(err)
		switch st.Code() {
		case codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented:
			r.fail(reqs, err)
			return fmt.Errorf("loadgen: tenant %s: ingest refused the key: %s: %s", tenant, st.Code(), st.Message())
		case codes.FailedPrecondition:
			// A conversation has ended (by a stale sweep, or because an
			// earlier attempt of this call stored its close): leave it
			// and send the rest again.
			conv := endedConversation(st)
			rest, kept := dropConversation(reqs, conv)
			if conv == "" || kept == total {
				r.fail(reqs, err)
				return nil
			}
			r.c.errors.Add(uint64(total - kept))
			r.report(fmt.Errorf("tenant %s: %d events of conversation %s not sent again, outcome unknown (an earlier attempt may have stored them, or lifecycle ended it): %w", tenant, total-kept, conv, err))
			reqs, total = rest, kept
			if total == 0 {
				return nil
			}
		case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
			delay := backoff
			if st.Code() == codes.ResourceExhausted {
				ri, ok := retryInfo(st)
				if !ok {
					r.fail(reqs, err) // too large for the tenant's burst: retrying cannot help
					return nil
				}
				// Every sender of the run pauses: they share the tenant's
				// budget, and a resent stream spends it again.
				delay = max(delay, ri)
				r.throttle.pause(delay)
			}
			if time.Since(began)+delay > retryBudget {
				r.fail(reqs, err)
				if st.Code() == codes.ResourceExhausted {
					return nil
				}
				return fmt.Errorf("loadgen: ingest still failing after %s of retries: %s: %s", retryBudget, st.Code(), st.Message())
			}
			time.Sleep(delay + time.Duration(rand.Int64N(int64(delay)/2+1)))
			backoff = min(backoff*2, 2*time.Second)
		default:
			r.fail(reqs, err)
			return nil
		}
	}
}

// fail counts a call's events as errors, stops their conversations and
// reports the error.
func (r *runner) fail(reqs [][]item, err error) {
	n := 0
	for _, q := range reqs {
		for _, it := range q {
			it.a.abandoned = true
		}
		n += len(q)
	}
	r.c.errors.Add(uint64(n))
	r.report(fmt.Errorf("%d events failed: %w", n, err))
}

func (r *runner) report(err error) {
	if r.cfg.OnError != nil {
		r.cfg.OnError(err)
	}
}

// throttle makes every sender wait after one of them was told to slow down.
type throttle struct {
	mu    sync.Mutex
	until time.Time
}

func (t *throttle) pause(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if u := time.Now().Add(d); u.After(t.until) {
		t.until = u
	}
}

func (t *throttle) wait() {
	t.mu.Lock()
	d := time.Until(t.until)
	t.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

// dropConversation removes a conversation's events from a call and abandons
// it; it returns the remaining requests and how many events they hold.
func dropConversation(reqs [][]item, conv string) ([][]item, int) {
	var out [][]item
	n := 0
	for _, q := range reqs {
		var keep []item
		for _, it := range q {
			if it.a.conv.ID == conv {
				it.a.abandoned = true
				continue
			}
			keep = append(keep, it)
		}
		if len(keep) > 0 {
			out = append(out, keep)
			n += len(keep)
		}
	}
	return out, n
}

// endedConversation finds the conversation in ingest's FailedPrecondition
// message: "events[3]: conversation c1 ended at ...".
func endedConversation(st *status.Status) string {
	_, rest, ok := strings.Cut(st.Message(), "conversation ")
	if !ok {
		return ""
	}
	conv, _, ok := strings.Cut(rest, " ended at ")
	if !ok || !eventbus.ValidConversationID(conv) {
		return ""
	}
	return conv
}

// retryInfo is the delay a ResourceExhausted status asks for; ok is false
// when it asks for none (the request can never pass).
func retryInfo(st *status.Status) (delay time.Duration, ok bool) {
	for _, d := range st.Details() {
		if ri, is := d.(*errdetails.RetryInfo); is && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}

// call makes one attempt of a call and returns one result per event, in
// order.
func (r *runner) call(ctx context.Context, reqs [][]item) ([]*ingestv1.EventResult, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	envs := func(q []item) []*eventv1.Envelope {
		out := make([]*eventv1.Envelope, len(q))
		for i, it := range q {
			out[i] = it.env()
		}
		return out
	}
	switch r.cfg.Mode {
	case ModeStream:
		s, err := r.client.AppendStream(ctx)
		if err != nil {
			return nil, err
		}
		for _, q := range reqs {
			if err := s.Send(&ingestv1.AppendStreamRequest{Events: envs(q)}); err != nil {
				if errors.Is(err, io.EOF) {
					break // the server ended the call; CloseAndRecv has its status
				}
				return nil, err
			}
		}
		resp, err := s.CloseAndRecv()
		if err != nil {
			return nil, err
		}
		return resp.GetResults(), nil
	case ModeSingle:
		res, err := r.single(ctx, reqs[0][0].env())
		if err != nil {
			return nil, err
		}
		return []*ingestv1.EventResult{res}, nil
	default:
		resp, err := r.client.Append(ctx, &ingestv1.AppendRequest{Events: envs(reqs[0])})
		if err != nil {
			return nil, err
		}
		return resp.GetResults(), nil
	}
}

// single sends one event with the convenience call for its kind.
func (r *runner) single(ctx context.Context, e *eventv1.Envelope) (*ingestv1.EventResult, error) {
	switch p := e.Payload.(type) {
	case *eventv1.Envelope_MessagePosted:
		return r.client.PostMessage(ctx, &ingestv1.PostMessageRequest{ConversationId: e.ConversationId, OccurredAt: e.OccurredAt, ClientEventId: e.ClientEventId, Message: p.MessagePosted})
	case *eventv1.Envelope_ConversationStarted:
		return r.client.StartConversation(ctx, &ingestv1.StartConversationRequest{ConversationId: e.ConversationId, OccurredAt: e.OccurredAt, ClientEventId: e.ClientEventId, Conversation: p.ConversationStarted})
	case *eventv1.Envelope_UsageRecorded:
		return r.client.RecordUsage(ctx, &ingestv1.RecordUsageRequest{ConversationId: e.ConversationId, OccurredAt: e.OccurredAt, ClientEventId: e.ClientEventId, Usage: p.UsageRecorded})
	case *eventv1.Envelope_ConversationClosed:
		return r.client.CloseConversation(ctx, &ingestv1.CloseConversationRequest{ConversationId: e.ConversationId, OccurredAt: e.OccurredAt, ClientEventId: e.ClientEventId, Close: p.ConversationClosed})
	default:
		resp, err := r.client.Append(ctx, &ingestv1.AppendRequest{Events: []*eventv1.Envelope{e}})
		if err != nil {
			return nil, err
		}
		if len(resp.GetResults()) != 1 {
			return nil, status.Errorf(codes.Internal, "%d results for 1 event", len(resp.GetResults()))
		}
		return resp.GetResults()[0], nil
	}
}

// apply records a successful call: the ack log, the counts and each
// conversation's progress.
func (r *runner) apply(tenant string, reqs [][]item, results []*ingestv1.EventResult) {
	var items []item
	for _, q := range reqs {
		items = append(items, q...)
	}
	if len(results) != len(items) {
		// Not what ingest promises; nothing can be said about these events.
		r.fail(reqs, fmt.Errorf("%d results for %d events", len(results), len(items)))
		return
	}
	var acks []Ack
	if r.acks != nil {
		acks = make([]Ack, len(items))
	}
	for i, it := range items {
		res, env := results[i], it.env()
		kind := eventbus.Kind(env)
		if acks != nil {
			acks[i] = Ack{Tenant: tenant, Conversation: env.ConversationId, EventID: res.GetEventId(), Kind: kind, Seq: res.GetStreamSequence(), Duplicate: res.GetDuplicate()}
		}
		r.c.acked.Add(1)
		if res.GetDuplicate() {
			r.c.duplicates.Add(1)
		}
		switch kind {
		case "message_posted":
			r.c.messages.Add(1)
		case "conversation_closed":
			r.c.closes.Add(1)
		}
		it.a.next = it.idx + 1
		if it.a.next == len(it.a.conv.Events) {
			r.c.conversations.Add(1)
		}
	}
	r.acks.write(acks)
}
