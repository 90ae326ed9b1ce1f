package leader_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/leader"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/testenv"
)

func TestKey(t *testing.T) {
	if got := leader.Key("tagging"); got != 0x74616767696e67 {
		t.Fatalf("Key(tagging) = %#x", got)
	}
	if leader.Key("lifecycle") == leader.Key("reporting") {
		t.Fatal("keys collide")
	}
}

// Of two replicas, one runs; the other takes over when it stops.
func TestOneReplicaRuns(t *testing.T) {
	ctx := context.Background()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: testenv.Postgres(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	var active, maxActive atomic.Int32
	started := make(chan int, 2)
	run := func(id int) func(context.Context) error {
		return func(ctx context.Context) error {
			n := active.Add(1)
			if n > maxActive.Load() {
				maxActive.Store(n)
			}
			started <- id
			<-ctx.Done()
			active.Add(-1)
			return nil
		}
	}
	ctx1, stop1 := context.WithCancel(ctx)
	ctx2, stop2 := context.WithCancel(ctx)
	defer stop2()
	done := make(chan error, 2)
	go func() { done <- leader.Run(ctx1, pool, 42, 20*time.Millisecond, "test", nil, run(1)) }()
	first := <-started
	go func() { done <- leader.Run(ctx2, pool, 42, 20*time.Millisecond, "test", nil, run(2)) }()
	select {
	case id := <-started:
		t.Fatalf("replica %d started while %d leads", id, first)
	case <-time.After(200 * time.Millisecond):
	}
	if first != 1 {
		t.Fatalf("first leader %d", first)
	}
	stop1()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case id := <-started:
		if id != 2 {
			t.Fatalf("took over: %d", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the standby did not take over")
	}
	if maxActive.Load() != 1 {
		t.Fatalf("%d replicas consumed at once", maxActive.Load())
	}
	stop2()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
