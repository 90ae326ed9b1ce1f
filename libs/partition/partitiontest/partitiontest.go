// Package partitiontest holds what the integration tests of partitioned
// consumers (lifecycle, tagging, reporting) share: who holds the partition
// leases, what was dead-lettered, and a handler wrapper that fails chosen
// batches.
package partitiontest

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"google.golang.org/protobuf/proto"
)

// Owners counts the live partition leases of consumer per member.
func Owners(t testing.TB, pool *pgxpool.Pool, consumer string) map[string]int {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT owner, count(*) FROM partition_leases
		WHERE consumer = $1 AND expires_at > clock_timestamp() GROUP BY owner`, consumer)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var o string
		var n int
		if err := rows.Scan(&o, &n); err != nil {
			t.Fatal(err)
		}
		out[o] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// DeadLetters returns the dead letters of consumer (every consumer's when
// empty): event id -> reason.
func DeadLetters(t testing.TB, js jetstream.JetStream, consumer string) map[string]string {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, eventbus.DLQStream)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	last := st.CachedInfo().State.LastSeq
	for seq := uint64(1); seq <= last; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if consumer != "" && m.Header.Get(eventbus.HeaderDLQConsumer) != consumer {
			continue
		}
		env := &eventv1.Envelope{}
		if err := proto.Unmarshal(m.Data, env); err != nil {
			t.Fatal(err)
		}
		out[env.GetEventId()] = m.Header.Get(eventbus.HeaderDLQError)
	}
	return out
}

// FailOn wraps a handler: a batch holding the event whose id is eventID()
// fails with err while fail returns true.
func FailOn(eventID func() string, err error, fail func() bool) func(partition.Handler) partition.Handler {
	return func(h partition.Handler) partition.Handler {
		return func(ctx context.Context, b partition.Batch) error {
			for _, d := range b.Deliveries {
				if d.Envelope.GetEventId() == eventID() && fail() {
					return err
				}
			}
			return h(ctx, b)
		}
	}
}

// FailFor is a fail func for FailOn: true during d from its first call (a
// store hiccup while an event is in flight), counting those calls in failed.
func FailFor(d time.Duration, failed *atomic.Int32) func() bool {
	var first atomic.Int64
	return func() bool {
		first.CompareAndSwap(0, time.Now().UnixNano())
		if time.Since(time.Unix(0, first.Load())) < d {
			failed.Add(1)
			return true
		}
		return false
	}
}
