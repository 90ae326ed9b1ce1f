package notification_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/evtest"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/notification"
	"google.golang.org/protobuf/proto"
)

// stamp is a receiver that records when each event's webhook arrived.
type stamp struct {
	mu  sync.Mutex
	at  map[string]time.Time // event id -> first arrival
	all int
}

func newStamp(b testing.TB) (*stamp, string) {
	s := &stamp{at: map[string]time.Time{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var m struct {
			Data struct {
				Event struct {
					EventID string `json:"event_id"`
				} `json:"event"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &m)
		now := time.Now()
		s.mu.Lock()
		if _, ok := s.at[m.Data.Event.EventID]; !ok {
			s.at[m.Data.Event.EventID] = now
		}
		s.all++
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	return s, srv.URL
}

func (s *stamp) count() (events, calls int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.at), s.all
}

// BenchmarkEventToWebhook publishes conversation_started events at 1,000
// per second (one conversation each, spread over the partitions) for
// b.N seconds' worth of events and reports the latency from the append's
// acknowledgement to the webhook's arrival.
func BenchmarkEventToWebhook(b *testing.B) {
	// One endpoint takes all 1,000 events/s: its limits are raised above
	// that (the defaults, 4 calls in flight and 50/s, protect receivers).
	f := start(b, func(c *notification.Config) { c.EndpointRate, c.EndpointConcurrency, c.Workers = 5000, 64, 128 })
	st, url := newStamp(b)
	f.subscribe(url, []string{"conversation_started"}, "")
	const rate = 1000
	total := max(b.N, 1) * rate
	sent := make(map[string]time.Time, total)
	var mu sync.Mutex
	b.ResetTimer()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var wg sync.WaitGroup
	for i := 0; i < total; i += rate / 100 {
		<-tick.C
		for j := i; j < min(i+rate/100, total); j++ {
			env := evtest.New("acme", fmt.Sprintf("bench-%d", j)).Started("support")
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := f.bus.Publish(context.Background(), proto.Clone(env).(*eventv1.Envelope)); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				sent[env.EventId] = time.Now()
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	f.waitFor("every webhook", func() bool { n, _ := st.count(); return n >= total })
	b.StopTimer()
	st.mu.Lock()
	lat := make([]time.Duration, 0, total)
	for id, at := range st.at {
		lat = append(lat, at.Sub(sent[id]))
	}
	st.mu.Unlock()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
}

// BenchmarkFanOut delivers each of b.N events to 100 subscriptions (one
// endpoint each) and reports deliveries per second.
func BenchmarkFanOut(b *testing.B) {
	f := start(b)
	const subs = 100
	st, url := newStamp(b)
	for i := range subs {
		f.subscribe(fmt.Sprintf("%s/%d", url, i), []string{"conversation_started"}, "")
	}
	b.ResetTimer()
	begin := time.Now()
	for i := range b.N {
		f.publish(evtest.New("acme", fmt.Sprintf("fan-%d", i)).Started("support"))
	}
	f.waitFor("every delivery", func() bool { _, calls := st.count(); return calls >= b.N*subs })
	b.StopTimer()
	b.ReportMetric(float64(b.N*subs)/time.Since(begin).Seconds(), "deliveries/s")
}
