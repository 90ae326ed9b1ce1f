package verify_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/localinfra"
	"github.com/parley-dev/parley/libs/natsauth"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/tools/loadgen"
	"github.com/parley-dev/parley/tools/stack"
	"github.com/parley-dev/parley/tools/verify"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// TestExactnessUnderLoad starts the whole suite, sends generated traffic for
// two tenants through ingest in batch, stream and single mode, and checks
// that the stream holds exactly what was acknowledged and that lifecycle,
// tagging and the ClickHouse projections agree with the stream. Then it
// breaks exactness on purpose (an ack never stored, a copied event, and a
// direct change to each store and to the DLQ) and checks that verify
// reports exactly that.
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
	// verify connects as NATS's operator user (the stack's NATS also lets
	// clients without credentials act as the operator: a wrong password
	// shows that the credentials are used).
	operator := config.NATS{URL: st.NATSURL, User: natsauth.Operator, Password: localinfra.NATSLocalPasswords()[natsauth.Operator]}
	wrong := operator
	wrong.Password = "wrong"
	if _, err := verify.Run(ctx, verify.Config{Acks: acks, NATS: wrong, PostgresURL: st.PostgresURL}); err == nil || !strings.Contains(err.Error(), "uthorization") {
		t.Fatalf("verify with a wrong NATS password: %v, want an authorization error", err)
	}
	cfg := verify.Config{
		NATS: operator, PostgresURL: st.PostgresURL,
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
	pausedLifecycle(t, ctx, st, keys, cfg, acks)

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

	// Corrupt each store directly, one conversation at a time: verify
	// reports exactly that conversation under exactly that check, besides
	// what it reported before.
	corrupt(t, ctx, st, bus, acks, closed, func(c corruption) []string {
		t.Helper()
		rep := check(acks)
		var got []string
		for _, p := range rep.Problems {
			for _, id := range p.IDs {
				got = append(got, p.Tenant+" "+p.Check+" "+id)
			}
		}
		if c.dlq {
			if p := rep.Problems[len(rep.Problems)-1]; p.Count != 1 || !strings.Contains(p.Description, "lifecycle 1") || rep.DeadLetters != 1 {
				t.Errorf("%s: dead letter problem %+v, %d dead letters", c.name, p, rep.DeadLetters)
			}
		}
		return got
	})
	t.Logf("whole test %s", time.Since(began).Round(time.Millisecond))
}

// corruption is one direct change to a store and the problem it must cause.
type corruption struct {
	name string
	dlq  bool
}

// corrupt breaks, in turn, a ClickHouse messages row, lifecycle's visitor
// count, a detector's tag and a conversation's facts in tagging; makes
// lifecycle and tagging skip a message as if it were an old redelivery; and
// puts a dead letter into PARLEY_DLQ. After each, check must return what it
// returned before plus exactly the problems that change causes.
func corrupt(t *testing.T, ctx context.Context, st *stack.Stack, bus *eventbus.Bus, acks []loadgen.Ack, closed map[string]bool, check func(corruption) []string) {
	t.Helper()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: st.PostgresURL, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ch, err := clickhouse.Open(&clickhouse.Options{Addr: []string{st.ClickHouseAddr}, Auth: clickhouse.Auth{Database: "parley", Username: "default"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()

	// Closed conversations of acme (nothing more happens to them), and a
	// message of each.
	var convs []string
	message := map[string]string{}
	for _, a := range acks {
		if a.Tenant != "acme" || !closed["acme/"+a.Conversation] {
			continue
		}
		if _, ok := message[a.Conversation]; !ok {
			convs = append(convs, a.Conversation)
			message[a.Conversation] = ""
		}
		if a.Kind == "message_posted" && message[a.Conversation] == "" {
			message[a.Conversation] = a.EventID
		}
	}
	// An open conversation of acme.
	var open string
	for _, a := range acks {
		if a.Tenant == "acme" && !closed["acme/"+a.Conversation] {
			open = a.Conversation
			break
		}
	}
	if open == "" {
		t.Fatal("no open conversation of acme")
	}
	// A closed conversation with a detector's tag.
	var tagged, detector string
	if err := pool.QueryRow(ctx, `SELECT conversation_id, rule_id FROM tagging_applied WHERE tenant_id = 'acme' AND rule_id LIKE 'builtin:%'
		AND conversation_id = ANY($1) ORDER BY conversation_id, rule_id LIMIT 1`, convs).Scan(&tagged, &detector); err != nil {
		t.Fatalf("a detector's tag on a closed conversation: %v", err)
	}
	var others []string
	for _, c := range convs {
		if c != tagged && message[c] != "" {
			others = append(others, c)
		}
	}
	if len(others) < 3 {
		t.Fatalf("closed conversations with messages: %d", len(others))
	}

	before := check(corruption{name: "before"})
	for _, c := range []struct {
		corruption
		do   func() error
		want []string
	}{
		{corruption{name: "clickhouse message row"}, func() error {
			id := message[others[0]]
			if err := ch.Exec(ctx, `ALTER TABLE messages DELETE WHERE tenant_id = 'acme' AND event_id = ?`, id); err != nil {
				return err
			}
			for { // the mutation runs in the background
				var n uint64
				if err := ch.QueryRow(ctx, `SELECT count() FROM messages WHERE tenant_id = 'acme' AND event_id = ?`, id).Scan(&n); err != nil || n == 0 {
					return err
				}
				time.Sleep(50 * time.Millisecond)
			}
		}, []string{"acme clickhouse.messages " + others[0]}},
		{corruption{name: "lifecycle count"}, func() error {
			_, err := pool.Exec(ctx, `UPDATE lifecycle_conversations SET visitor_messages = visitor_messages + 1 WHERE tenant_id = 'acme' AND conversation_id = $1`, others[1])
			return err
		}, []string{"acme lifecycle.counts " + others[1]}},
		{corruption{name: "tagging tag"}, func() error {
			_, err := pool.Exec(ctx, `DELETE FROM tagging_applied WHERE tenant_id = 'acme' AND conversation_id = $1 AND rule_id = $2`, tagged, detector)
			return err
		}, []string{"acme tagging.issues " + tagged, "acme tagging.tags " + tagged}},
		{corruption{name: "tagging facts"}, func() error {
			_, err := pool.Exec(ctx, `DELETE FROM tagging_conversations WHERE tenant_id = 'acme' AND conversation_id = $1`, others[2])
			return err
		}, []string{"acme tagging.unknown " + others[2]}},
		{corruption{name: "skipped redelivery"}, func() error {
			// The fault of consumers that skip an event below their
			// conversation's applied sequence: lifecycle and tagging
			// believe they are past the next message, reporting is not.
			for _, table := range []string{"lifecycle_conversations", "tagging_conversations"} {
				if _, err := pool.Exec(ctx, `UPDATE `+table+` SET applied_seq = applied_seq + 1000000000 WHERE tenant_id = 'acme' AND conversation_id = $1`, open); err != nil {
					return err
				}
			}
			now := timestamppb.Now()
			_, err := bus.Publish(ctx, &eventv1.Envelope{EventId: uuid.NewString(), TenantId: "acme", ConversationId: open, OccurredAt: now, RecordedAt: now,
				Producer: "ingest", Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{
					MessageId: uuid.NewString(), Role: eventv1.Role_ROLE_VISITOR, Text: "still there?"}}})
			return err
		}, []string{"acme lifecycle.counts " + open, "acme tagging.counts " + open}},
		{corruption{name: "held conversation"}, func() error {
			_, err := pool.Exec(ctx, `INSERT INTO partition_held (consumer, tenant_id, conversation_id, partition, blocked_seq, reason)
				VALUES ('lifecycle', 'acme', $1, 0, 42, 'test: refused')`, others[0])
			return err
		}, []string{"acme partition.held lifecycle " + others[0] + " seq 42: test: refused"}},
		{corruption{name: "dead letter", dlq: true}, func() error {
			m := nats.NewMsg(eventbus.DLQSubjectPrefix + ".lifecycle")
			m.Data = []byte("not an envelope")
			m.Header.Set(eventbus.HeaderDLQSubject, eventbus.ConvSubject("acme", others[0], "message_posted"))
			m.Header.Set(eventbus.HeaderDLQConsumer, "lifecycle")
			m.Header.Set(eventbus.HeaderDLQSequence, "42")
			m.Header.Set(eventbus.HeaderDLQError, "handler: boom")
			_, err := bus.JetStream().PublishMsg(ctx, m)
			return err
		}, []string{"acme dlq.dead_letters lifecycle seq 42 " + eventbus.ConvSubject("acme", others[0], "message_posted") + ": handler: boom"}},
	} {
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := check(c.corruption)
		want := slices.Sorted(slices.Values(append(slices.Clone(before), c.want...)))
		if !slices.Equal(slices.Sorted(slices.Values(got)), want) {
			t.Errorf("%s: got problems\n%s\nwant\n%s", c.name, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		before = got
	}
}

// pausedLifecycle pauses lifecycle (its table locked against writes), sends
// more conversations and checks that verify sees lifecycle's partitions
// behind and keeps waiting for them, and once lifecycle resumes reports
// everything, old and new, as correct.
func pausedLifecycle(t *testing.T, ctx context.Context, st *stack.Stack, keys map[string]string, cfg verify.Config, acks []loadgen.Ack) {
	t.Helper()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: st.PostgresURL, MaxConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background()) //nolint:errcheck // released below or at the end
	if _, err := tx.Exec(ctx, `LOCK TABLE lifecycle_conversations IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	run := loadgen.Config{Mode: loadgen.ModeBatch, Conversations: 6, BatchSize: 20, Concurrency: 1, Seed: 14, RunID: "vp",
		IngestAddr: st.GRPCAddr("ingest"), Keys: keys, AckLog: &log}
	s, err := loadgen.Run(ctx, run)
	if err != nil || s.Errors != 0 || s.Acked != s.Events {
		t.Fatalf("run while lifecycle is paused: %+v, %v", s, err)
	}
	more, err := loadgen.ReadAcks(bytes.NewReader(log.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	// Release lifecycle after three rounds that saw its partitions behind.
	var roundsBehind int
	var released time.Time
	cfg.Acks = append(slices.Clone(acks), more...)
	cfg.Progress = func(r verify.Round) {
		t.Logf("paused lifecycle, verify round %d: %d kinds of discrepancy pending (first: %s %s); behind: %v", r.N, len(r.Pending), r.Pending[0].Tenant, r.Pending[0].Check, r.Behind)
		if !released.IsZero() || r.Behind[verify.LifecycleConsumer] == 0 {
			return
		}
		if roundsBehind++; roundsBehind == 3 {
			if err := tx.Rollback(ctx); err != nil {
				t.Error(err)
			}
			released = time.Now()
		}
	}
	rep, err := verify.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	rep.Write(&out)
	if released.IsZero() || !rep.OK() {
		t.Fatalf("paused lifecycle: released after %d rounds behind: %v; report:\n%s", roundsBehind, !released.IsZero(), out.String())
	}
	t.Logf("paused lifecycle: verify waited %s, %s of it after lifecycle resumed", rep.Waited.Round(time.Millisecond), time.Since(released).Round(time.Millisecond))
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
