package ingest_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/eventbus"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	"github.com/parley-dev/parley/services/ingest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// BenchmarkAppend reports events/s acknowledged by ingest's gRPC Append for
// batches of 1, 100 and 1000 events from one caller and for 64 concurrent
// single-event callers, on a JetStream that acknowledges lazily (default) and
// on one that syncs before acknowledging (sync_interval: always). Each
// setting first measures the raw JetStream publish rate of the same
// envelopes (asynchronous, windowed) on the same server; every figure is
// also reported as a ratio to it ("x-raw"). Ingest runs with its default
// commit mode for the setting: pipelined when lazy, atomic group commit when
// synced.
//
//	go test ./services/ingest -run XXX -bench Append -benchtime 20000x
func BenchmarkAppend(b *testing.B) {
	text := strings.Repeat("where is my order? ", 15) // ~300 bytes of text
	for _, syncAlways := range []bool{false, true} {
		setting, mode := "lazy", "pipelined"
		if syncAlways {
			setting, mode = "sync-always", "atomic"
		}
		b.Run(setting, func(b *testing.B) {
			f := startWith(b, syncAlways, func(c *ingest.Config) {
				c.MaxBatch = 1000
				c.CommitMode = mode
				c.MaxTextBytes = 16 << 10
				c.MaxRequestBytes = 4 << 20
			})
			var raw float64
			b.Run("raw-js-publish", func(b *testing.B) {
				raw = rawPublish(b, f.nats.URL, text)
				b.ReportMetric(raw, "events/s")
			})
			report := func(b *testing.B, events int, d time.Duration) {
				rate := float64(events) / d.Seconds()
				b.ReportMetric(rate, "events/s")
				if raw > 0 {
					b.ReportMetric(rate/raw, "x-raw")
				}
			}
			for _, size := range []int{1, 100, 1000} {
				b.Run(fmt.Sprintf("batch-%d", size), func(b *testing.B) {
					calls := max(b.N/size, 1)
					start := time.Now()
					for range calls {
						if _, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: batch(size, text)}); err != nil {
							b.Fatal(err)
						}
					}
					report(b, calls*size, time.Since(start))
				})
			}
			b.Run("concurrent-64x1", func(b *testing.B) {
				var wg sync.WaitGroup
				work := make(chan struct{}, 64)
				errs := make(chan error, 64)
				start := time.Now()
				for range 64 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range work {
							if _, err := f.client.Append(f.ctx(), &ingestv1.AppendRequest{Events: batch(1, text)}); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
				for range b.N {
					work <- struct{}{}
				}
				close(work)
				wg.Wait()
				select {
				case err := <-errs:
					b.Fatal(err)
				default:
				}
				report(b, b.N, time.Since(start))
			})
		})
	}
}

func batch(n int, text string) []*eventv1.Envelope {
	out := make([]*eventv1.Envelope, n)
	for i := range out {
		out[i] = &eventv1.Envelope{
			ConversationId: fmt.Sprintf("bench-%d", i%200),
			Payload:        &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: text}},
		}
	}
	return out
}

// rawPublish publishes b.N complete envelopes straight to JetStream with
// asynchronous publishes (at most 4000 awaiting acknowledgement) and returns
// the rate: the ceiling ingest is compared with.
func rawPublish(b *testing.B, url, text string) float64 {
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4000))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	for i := range b.N {
		env := batch(1, text)[0]
		env.TenantId, env.EventId, env.OccurredAt, env.RecordedAt = "acme", eventbus.NewEventID(), timestamppb.Now(), timestamppb.Now()
		env.Kind = eventbus.Kind(env)
		data, err := proto.Marshal(env)
		if err != nil {
			b.Fatal(err)
		}
		msg := nats.NewMsg(eventbus.ConvSubject("acme", env.ConversationId, env.Kind))
		msg.Data = data
		if _, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(eventbus.MsgID(env.TenantId, env.EventId))); err != nil {
			b.Fatal(err)
		}
		if i%4000 == 3999 {
			<-js.PublishAsyncComplete()
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
	case <-time.After(2 * time.Minute):
		b.Fatal("raw publish did not complete")
	}
	return float64(b.N) / time.Since(start).Seconds()
}
