package notification_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/evtest"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/services/notification"
	"github.com/parley-dev/parley/services/notification/notifybench"
	"google.golang.org/protobuf/proto"
)

func newStamp(b testing.TB) (*notifybench.Receiver, string) {
	r := notifybench.NewReceiver()
	srv := httptest.NewServer(r)
	b.Cleanup(srv.Close)
	return r, srv.URL
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
	b.ResetTimer()
	sent, err := notifybench.Publish(context.Background(), rate, total,
		func(i int) *eventv1.Envelope {
			return evtest.New("acme", fmt.Sprintf("bench-%d", i)).Started("support")
		},
		func(ctx context.Context, env *eventv1.Envelope) error {
			_, err := f.bus.Publish(ctx, proto.Clone(env).(*eventv1.Envelope))
			return err
		})
	if err != nil {
		b.Fatal(err)
	}
	f.waitFor("every webhook", func() bool { n, _ := st.Counts(); return n >= total })
	b.StopTimer()
	lat := st.Latencies(sent)
	b.ReportMetric(float64(notifybench.Percentile(lat, 0.5).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(notifybench.Percentile(lat, 0.99).Milliseconds()), "p99-ms")
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
	f.waitFor("every delivery", func() bool { _, calls := st.Counts(); return calls >= b.N*subs })
	b.StopTimer()
	b.ReportMetric(float64(b.N*subs)/time.Since(begin).Seconds(), "deliveries/s")
}
