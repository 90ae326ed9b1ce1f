package eventbus_test

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
	"github.com/parley-dev/parley/libs/testenv"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
)

// BenchmarkGroupCommit measures events/s stored by the group committer with
// 64 concurrent single-event callers, against one-by-one Publish and the raw
// JetStream async publish rate, on servers with lazy sync and with
// sync_interval: always. Run: go test ./libs/eventbus -run XXX -bench GroupCommit
func BenchmarkGroupCommit(b *testing.B) {
	text := strings.Repeat("x", 300) // ~400-byte envelopes
	for _, sync := range []bool{false, true} {
		name := "lazy"
		if sync {
			name = "sync-always"
		}
		b.Run(name+"/raw-js-async", func(b *testing.B) {
			n := testenv.NATSWithSync(b, sync)
			bus := benchBus(b, n.URL)
			data := mustMessageBytes(b, text)
			js := bus.JetStream()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				msg := nats.NewMsg(eventbus.ConvSubject("acme", "raw", "message_posted"))
				msg.Data = data
				if _, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(eventbus.NewEventID())); err != nil {
					b.Fatal(err)
				}
				if i%2000 == 1999 { // stay under the client's pending limit
					<-js.PublishAsyncComplete()
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("async publish did not complete")
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
		b.Run(name+"/publish-each-64", func(b *testing.B) {
			n := testenv.NATSWithSync(b, sync)
			bus := benchBus(b, n.URL)
			runConcurrent(b, 64, func(ctx context.Context, i int) error {
				_, err := bus.Publish(ctx, message(fmt.Sprintf("c%d", i%1000), eventbus.NewEventID(), text))
				return err
			})
		})
		for _, mode := range []eventbus.CommitMode{eventbus.CommitAtomic, eventbus.CommitPipelined} {
			b.Run(name+"/"+string(mode)+"-64", func(b *testing.B) {
				n := testenv.NATSWithSync(b, sync)
				bus := benchBus(b, n.URL)
				g := eventbus.NewGroupCommitter(bus, eventbus.GroupCommitOptions{Mode: mode})
				defer g.Close()
				runConcurrent(b, 64, func(ctx context.Context, i int) error {
					_, err := g.Append(ctx, []*eventv1.Envelope{message(fmt.Sprintf("c%d", i%1000), eventbus.NewEventID(), text)})
					return err
				})
			})
		}
	}
}

func benchBus(b *testing.B, url string) *eventbus.Bus {
	bus, err := eventbus.Connect(context.Background(), url, "bench", eventbus.Options{Producer: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bus.Close() })
	if err := bus.EnsureStreams(context.Background()); err != nil {
		b.Fatal(err)
	}
	return bus
}

func mustMessageBytes(b *testing.B, text string) []byte {
	env := message("raw", eventbus.NewEventID(), text)
	env.Kind = eventbus.Kind(env)
	data, err := protoMarshal(env)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// runConcurrent runs b.N calls of fn over workers goroutines and reports
// events/s.
func runConcurrent(b *testing.B, workers int, fn func(ctx context.Context, i int) error) {
	ctx := context.Background()
	next := make(chan int, workers)
	var wg sync.WaitGroup
	var errOnce sync.Once
	var firstErr error
	b.ResetTimer()
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					errOnce.Do(func() { firstErr = err })
				}
			}
		}()
	}
	for i := 0; i < b.N; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

func protoMarshal(env *eventv1.Envelope) ([]byte, error) { return proto.Marshal(env) }
