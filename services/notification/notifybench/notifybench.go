// Package notifybench is the load and the receiver of notification's
// benchmarks: events published at a steady rate, and an HTTP receiver that
// stamps each event's first webhook. The go benchmarks of
// services/notification and the notification phase of tools/bench share it.
package notifybench

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// Receiver is a webhook endpoint that answers 204 and records when the
// first delivery of each conversation's event arrived (the load has one
// event per conversation, so ids a client assigns match), and how many
// calls came in.
type Receiver struct {
	mu    sync.Mutex
	at    map[string]time.Time // conversation id -> first arrival
	calls int
}

// NewReceiver returns an empty receiver.
func NewReceiver() *Receiver { return &Receiver{at: map[string]time.Time{}} }

// ServeHTTP implements http.Handler.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	var m struct {
		Data struct {
			Event struct {
				ConversationID string `json:"conversation_id"`
			} `json:"event"`
		} `json:"data"`
	}
	_ = json.Unmarshal(body, &m)
	now := time.Now()
	r.mu.Lock()
	if _, ok := r.at[m.Data.Event.ConversationID]; !ok {
		r.at[m.Data.Event.ConversationID] = now
	}
	r.calls++
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// Counts returns the distinct conversations' events received and the calls.
func (r *Receiver) Counts() (events, calls int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.at), r.calls
}

// Latencies returns, sorted, each received event's time from its
// publication's acknowledgement (sent, by conversation id) to its first
// webhook.
func (r *Receiver) Latencies(sent map[string]time.Time) []time.Duration {
	r.mu.Lock()
	out := make([]time.Duration, 0, len(r.at))
	for id, at := range r.at {
		if s, ok := sent[id]; ok {
			out = append(out, at.Sub(s))
		}
	}
	r.mu.Unlock()
	slices.Sort(out)
	return out
}

// Percentile is the p-th (0..1) of sorted latencies; 0 when there are none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(p*float64(len(sorted)-1))]
}

// Publish publishes total events (event(i) for i in [0, total)) at rate
// per second, in slices of 10ms, each publish on its own goroutine so a
// slow acknowledgement never slows the pace. It returns when each event
// was acknowledged, by conversation id, and the first error.
func Publish(ctx context.Context, rate, total int, event func(i int) *eventv1.Envelope,
	publish func(context.Context, *eventv1.Envelope) error) (map[string]time.Time, error) {
	sent := make(map[string]time.Time, total)
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	per := max(rate/100, 1)
	for i := 0; i < total; i += per {
		select {
		case <-ctx.Done():
			wg.Wait()
			return sent, ctx.Err()
		case <-tick.C:
		}
		for j := i; j < min(i+per, total); j++ {
			env := event(j)
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := publish(ctx, env)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if first == nil {
						first = err
					}
					return
				}
				sent[env.GetConversationId()] = time.Now()
			}()
		}
	}
	wg.Wait()
	return sent, first
}

// Wait polls cond every 20ms until it holds or ctx ends.
func Wait(ctx context.Context, cond func() bool) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
