package verify_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	"github.com/parley-dev/parley/tools/loadgen"
	"github.com/parley-dev/parley/tools/stack"
	"github.com/parley-dev/parley/tools/verify"
)

// TestExactnessUnderLoad starts the whole suite, sends generated traffic for
// two tenants through ingest in batch, stream and single mode, and checks
// that the stream, lifecycle and the ClickHouse projections hold exactly
// what was acknowledged. Then it breaks exactness on purpose, twice, and
// checks that verify notices.
func TestExactnessUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts the whole stack")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	began := time.Now()
	st := startStack(t, ctx)
	defer st.Stop()
	t.Logf("stack up in %s", time.Since(began).Round(time.Millisecond))

	pool, err := pgstore.Connect(ctx, config.Postgres{URL: st.PostgresURL, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	store := tenancy.NewStore(pool)
	if err := store.CreateTenant(ctx, "acme", "Acme"); err != nil {
		t.Fatal(err)
	}
	acmeKey, _, err := store.CreateAPIKey(ctx, "acme", "loadgen", []string{grpcx.ScopeIngest})
	pool.Close()
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{"demo": st.DemoKey, "acme": acmeKey}

	var log bytes.Buffer
	var closes uint64
	for _, run := range []loadgen.Config{
		{Mode: loadgen.ModeBatch, Conversations: 120, BatchSize: 50, Concurrency: 4, Seed: 11, RunID: "vb"},
		{Mode: loadgen.ModeStream, Conversations: 25, BatchSize: 20, Concurrency: 2, Seed: 12, RunID: "vs"},
		{Mode: loadgen.ModeSingle, Conversations: 8, Concurrency: 4, Seed: 13, RunID: "v1"},
	} {
		run.IngestAddr, run.Keys, run.AckLog = st.GRPCAddr("ingest"), keys, &log
		s, err := loadgen.Run(ctx, run)
		if err != nil {
			t.Fatalf("%s run: %v", run.Mode, err)
		}
		t.Logf("%s: %s", run.Mode, s)
		if s.Errors != 0 || s.Conversations != uint64(run.Conversations) || s.Acked != s.Events {
			t.Fatalf("%s run: %+v", run.Mode, s)
		}
		closes += s.Closes
	}
	acks, err := loadgen.ReadAcks(bytes.NewReader(log.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := verify.Config{
		NATSURL: st.NATSURL, PostgresURL: st.PostgresURL,
		ClickHouse: config.ClickHouse{Addr: st.ClickHouseAddr, Database: "parley"},
		Settle:     45 * time.Second,
		Progress: func(r verify.Round) {
			t.Logf("verify round %d: %d kinds of discrepancy pending (first: %s %s, %d); behind: %v", r.N, len(r.Pending), r.Pending[0].Tenant, r.Pending[0].Check, r.Pending[0].Count, r.Behind)
		},
	}
	check := func(acks []loadgen.Ack) *verify.Report {
		t.Helper()
		cfg.Acks = acks
		began := time.Now()
		rep, err := verify.Run(ctx, cfg)
		if err != nil {
			t.Fatalf("verify: %v", err)
		}
		var out bytes.Buffer
		rep.Write(&out)
		t.Logf("verify took %s:\n%s", time.Since(began).Round(time.Millisecond), out.String())
		return rep
	}

	rep := check(acks)
	if !rep.OK() || rep.Lost != 0 || rep.Duplicated != 0 || uint64(rep.EndedOnce) != closes || len(rep.Tenants) != 2 {
		t.Fatalf("after the load: ok=%v lost %d duplicated %d ended once %d (closes %d)", rep.OK(), rep.Lost, rep.Duplicated, rep.EndedOnce, closes)
	}

	// An acknowledgement of an event that was never stored: exactly 1 lost.
	fake := acks[len(acks)/2]
	fake.EventID, fake.Kind, fake.Seq, fake.Duplicate = uuid.NewString(), "message_posted", 1<<40, false
	rep = check(append(append([]loadgen.Ack(nil), acks...), fake))
	if rep.Lost != 1 || rep.Duplicated != 0 || len(rep.Problems) != 1 || rep.Problems[0].Check != "stream.lost" || rep.Problems[0].IDs[0] != fake.EventID {
		t.Fatalf("fake ack: lost %d, duplicated %d, problems %+v", rep.Lost, rep.Duplicated, rep.Problems)
	}

	// A second copy of a stored event that JetStream cannot deduplicate
	// (another Nats-Msg-Id, as after the duplicate window): 1 duplicated.
	// A conversation_started of an open conversation: the copy changes no
	// projection.
	closed := map[string]bool{}
	for _, a := range acks {
		if a.Kind == "conversation_closed" {
			closed[a.Tenant+"/"+a.Conversation] = true
		}
	}
	var victim loadgen.Ack
	for _, a := range acks {
		if a.Kind == "conversation_started" && !closed[a.Tenant+"/"+a.Conversation] {
			victim = a
			break
		}
	}
	if victim.EventID == "" {
		t.Fatal("no open conversation in the run")
	}
	bus, err := eventbus.Connect(ctx, st.NATSURL, "verify-test", eventbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	s, err := bus.JetStream().Stream(ctx, eventbus.ConvStream)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.GetMsg(ctx, victim.Seq)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(raw.Subject)
	msg.Data = raw.Data
	for k, v := range raw.Header {
		if !strings.HasPrefix(k, "Nats-") {
			msg.Header[k] = v
		}
	}
	msg.Header.Set(nats.MsgIdHdr, victim.EventID+"-copy")
	if _, err := bus.JetStream().PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	rep = check(acks)
	if rep.Duplicated != 1 || rep.Lost != 0 || len(rep.Problems) != 1 || rep.Problems[0].Check != "stream.duplicated" || rep.Problems[0].IDs[0] != victim.EventID {
		t.Fatalf("copied event: lost %d, duplicated %d, problems %+v", rep.Lost, rep.Duplicated, rep.Problems)
	}
	t.Logf("whole test %s", time.Since(began).Round(time.Millisecond))
}

// startStack starts the suite in a temp dir on free ports. A free port can
// be taken by another test process before a service binds it; then it tries
// again with other ports.
func startStack(t *testing.T, ctx context.Context) *stack.Stack {
	t.Helper()
	for attempt := 1; ; attempt++ {
		dir, err := os.MkdirTemp("", "parley-verify-")
		if err != nil {
			t.Fatal(err)
		}
		// PostgreSQL runs as the postgres user, who must be able to enter it.
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		st, err := stack.Start(ctx, stack.Options{Dir: filepath.Clean(dir), FreePorts: true, DemoTenant: "demo"})
		if err == nil {
			return st
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("start stack: %v", err)
		}
		t.Logf("start stack, attempt %d: %v; trying other ports", attempt, err)
	}
}
