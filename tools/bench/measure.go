package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/chstore"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/libs/tenancy"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	ingestv1 "github.com/parley-dev/parley/proto/parley/ingest/v1"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/synthetic"
	"github.com/parley-dev/parley/tools/loadgen"
	"github.com/parley-dev/parley/tools/stack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type logFunc func(format string, args ...any)

func met(ok bool) *bool { return &ok }

// measureIngest reports the raw JetStream publish rate (the ceiling) and
// ingest's acknowledged events/s with ack latency, for the suite's sync
// setting.
func measureIngest(ctx context.Context, o Options, s *suite, rep *Report, prof *profiler, setting string, logf logFunc) error {
	logf("[%s] raw JetStream publish rate", setting)
	raw, err := rawPublish(ctx, s.NATSURL, o.Phase/2)
	if err != nil {
		return err
	}
	group := "Ingest (" + setting + ")"
	rep.add(Result{Group: group, Name: "raw JetStream async publish", Value: raw, Unit: "events/s", Note: "one message per publish"})
	logf("[%s] raw JetStream atomic-batch publish rate (the durable ceiling)", setting)
	ceiling, err := rawAtomicPublish(ctx, s.NATSURL, o.Phase/2)
	if err != nil {
		return fmt.Errorf("bench: atomic-batch ceiling: %w", err)
	}
	rep.add(Result{Group: group, Name: "raw JetStream atomic-batch publish (ceiling)", Value: ceiling, Unit: "events/s",
		Note: fmt.Sprintf("batches of %d, %d publishers, one message id each", atomicBatch, atomicPublishers)})
	// Interactive senders (widgets, bot runtimes) send small requests; bulk
	// senders (replays, imports, server-side integrations) larger ones: a
	// request of up to 1000 events is stored atomically.
	runs := []struct {
		name                 string
		batch, senders, seed int
		phase                time.Duration
		latency              bool
	}{
		{"ingest: events acknowledged", 100, 16, 1, o.Phase, true},
		{"ingest, requests of 1000 events: events acknowledged", 1000, 8, 11, o.Phase / 2, false},
	}
	for _, r := range runs {
		logf("[%s] ingest throughput (loadgen, gRPC Append batches of %d, %d senders)", setting, r.batch, r.senders)
		waitProfiles := func() {}
		if r.latency && setting == "sync-always" {
			waitProfiles = prof.cpu(ctx, "ingest", r.phase)
		}
		st, err := loadgen.Run(ctx, loadgen.Config{
			IngestAddr: s.GRPCAddr("ingest"), Keys: map[string]string{"bench": s.DemoKey},
			Conversations: 1_000_000, Duration: r.phase, Concurrency: r.senders, Mode: "batch", BatchSize: r.batch, Seed: int64(r.seed),
		})
		waitProfiles()
		if err != nil {
			return fmt.Errorf("bench: ingest load: %w", err)
		}
		if st.Acked > 0 && s.msgShare == 0 {
			s.msgShare = float64(st.Messages) / float64(st.Acked)
		}
		rate := st.EventsPerSecond()
		res := Result{Group: group, Name: r.name, Value: rate, Unit: "events/s",
			Reference: "raw JetStream atomic-batch publish, same server", ReferenceValue: ceiling, Ratio: rate / ceiling,
			Note: fmt.Sprintf("%d events, %d errors; ack latency per call of %d events p50 %s, p99 %s", st.Acked, st.Errors, r.batch, st.AckP50.Round(time.Millisecond), st.AckP99.Round(time.Millisecond))}
		if setting == "sync-always" {
			res.Target = "≥ 40,000 events/s"
			res.Met = met(rate >= 40000)
		}
		rep.add(res)
		ratio := Result{Group: group, Name: fmt.Sprintf("ingest ÷ raw JetStream atomic-batch publish (requests of %d)", r.batch),
			Value: rate / ceiling, Unit: "×"}
		if setting == "sync-always" {
			ratio.Name = fmt.Sprintf("durable ingest ÷ atomic-batch ceiling (requests of %d)", r.batch)
			ratio.Target, ratio.Met = "≥ 0.5×", met(rate >= ceiling/2)
		}
		rep.add(ratio)
		if r.latency {
			rep.add(Result{Group: group, Name: fmt.Sprintf("ingest: ack latency p50 (batch of %d)", r.batch), Value: ms(st.AckP50), Unit: "ms"})
			rep.add(Result{Group: group, Name: fmt.Sprintf("ingest: ack latency p99 (batch of %d)", r.batch), Value: ms(st.AckP99), Unit: "ms"})
		}
	}
	return nil
}

// The atomic-batch ceiling's shape: full batches (JetStream's maximum, what
// ingest's group commit fills under load) from a few publishers.
const (
	atomicBatch      = eventbus.MaxAtomicBatch
	atomicPublishers = 4
)

// rawAtomicPublish stores 400-byte envelopes, each with its own message id,
// in JetStream atomic batches (ADR-50) to a scratch stream on the same
// server (same storage and sync settings): the most any durable ingest can
// store, since one atomic batch is one stream write and one sync.
func rawAtomicPublish(ctx context.Context, url string, d time.Duration) (float64, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BENCH_ATOMIC", Subjects: []string{"bench.atomic.>"}, Storage: jetstream.FileStorage,
		Duplicates: 2 * time.Minute, AllowAtomicPublish: true}); err != nil {
		return 0, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), "BENCH_ATOMIC") }()
	bus, err := eventbus.New(nc, eventbus.Options{})
	if err != nil {
		return 0, err
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int
		first error
	)
	start := time.Now()
	for p := range atomicPublishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := &eventv1.Envelope{TenantId: "bench", ConversationId: fmt.Sprintf("atomic-%d", p), Kind: "message_posted", OccurredAt: timestamppb.Now(), RecordedAt: timestamppb.Now(),
				Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: strings.Repeat("where is my order? ", 15)}}}
			n := 0
			defer func() { mu.Lock(); total += n; mu.Unlock() }()
			for time.Since(start) < d && ctx.Err() == nil {
				msgs := make([]*nats.Msg, atomicBatch)
				for i := range msgs {
					env.EventId = eventbus.NewEventID()
					data, _ := proto.Marshal(env)
					msgs[i] = &nats.Msg{Subject: fmt.Sprintf("bench.atomic.%d", p), Data: data,
						Header: nats.Header{jetstream.MsgIDHeader: []string{eventbus.MsgID(env.TenantId, env.EventId)}}}
				}
				if _, err := bus.PublishAtomic(ctx, msgs); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
				n += len(msgs)
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	return float64(total) / time.Since(start).Seconds(), nil
}

// rawPublish publishes 400-byte envelopes to a scratch stream on the same
// server (same storage settings) with asynchronous publishes.
func rawPublish(ctx context.Context, url string, d time.Duration) (float64, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4000))
	if err != nil {
		return 0, err
	}
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "BENCH_RAW", Subjects: []string{"bench.raw.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute}); err != nil {
		return 0, err
	}
	defer func() { _ = js.DeleteStream(context.Background(), "BENCH_RAW") }()
	env := &eventv1.Envelope{TenantId: "bench", ConversationId: "raw", Kind: "message_posted", OccurredAt: timestamppb.Now(), RecordedAt: timestamppb.Now(),
		Payload: &eventv1.Envelope_MessagePosted{MessagePosted: &eventv1.MessagePosted{Role: eventv1.Role_ROLE_VISITOR, Text: strings.Repeat("where is my order? ", 15)}}}
	start := time.Now()
	n := 0
	for time.Since(start) < d {
		env.EventId = eventbus.NewEventID()
		data, _ := proto.Marshal(env)
		m := nats.NewMsg("bench.raw.x")
		m.Data = data
		if _, err := js.PublishMsgAsync(m, jetstream.WithMsgID(eventbus.MsgID(env.TenantId, env.EventId))); err != nil {
			return 0, err
		}
		n++
		if n%4000 == 0 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
	return float64(n) / time.Since(start).Seconds(), nil
}

// probeWait bounds the wait for one lag probe to become visible.
const probeWait = 2 * time.Minute

// measureEndToEnd reports the lag from ingest ack to visible in
// ListConversations at a fixed rate, and sustained end-to-end throughput.
func measureEndToEnd(ctx context.Context, o Options, s *suite, rep *Report, prof *profiler, logf logFunc) error {
	conn, err := grpc.NewClient(s.GRPCAddr("ingest"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rconn, err := grpc.NewClient(s.GRPCAddr("reporting"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer rconn.Close()
	in, rp := ingestv1.NewIngestServiceClient(conn), reportingv1.NewReportingServiceClient(rconn)
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+s.DemoKey)

	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: s.ClickHouseAddr, Database: "parley", User: "default"})
	if err != nil {
		return err
	}
	defer ch.Close()
	// Lag at a fixed rate is measured from a drained pipeline, not while
	// the services still work off the ingest phase's backlog.
	if waited, err := waitQuiet(ctx, ch, s, 10*time.Minute, false); err != nil {
		return fmt.Errorf("bench: before the lag phase: %w", err)
	} else {
		logf("consumers caught up after %s", waited.Round(time.Second))
	}
	if !o.runs("lag") {
		return measureSustained(ctx, o, s, ch, rep, prof, logf)
	}
	share := s.msgShare
	if share <= 0 {
		share = 0.5
	}
	const lagMessages = 5000
	lagRate := lagMessages / share
	logf("end-to-end lag at %d messages/s (%.0f events/s)", lagMessages, lagRate)
	lctx, cancel := context.WithTimeout(ctx, o.Phase)
	defer cancel()
	var lags []time.Duration
	var wg sync.WaitGroup
	wg.Add(1)
	var (
		loadErr error
		lagLoad loadgen.Stats
	)
	go func() {
		defer wg.Done()
		lagLoad, loadErr = loadgen.Run(lctx, loadgen.Config{IngestAddr: s.GRPCAddr("ingest"), Keys: map[string]string{"bench": s.DemoKey},
			Conversations: 1_000_000, Rate: lagRate, Duration: o.Phase, Concurrency: 8, Mode: "batch", BatchSize: 50, Seed: 2})
	}()
	for i := 0; lctx.Err() == nil; i++ {
		bot := fmt.Sprintf("lag-probe-%d-%d", time.Now().UnixNano(), i)
		_, err := in.StartConversation(authed, &ingestv1.StartConversationRequest{ConversationId: bot, Conversation: &eventv1.ConversationStarted{BotId: bot}})
		if err != nil {
			continue
		}
		acked := time.Now()
		// A probe still in flight when the phase ends is waited for (up
		// to probeWait): dropping it would leave out the slowest samples.
		// One never seen counts with the time waited, a lower bound.
		for {
			res, err := rp.ListConversations(authed, &reportingv1.ListConversationsRequest{PageSize: 1, Filter: &reportingv1.Filter{BotIds: []string{bot}}})
			if err == nil && res.TotalCount == 1 || time.Since(acked) > probeWait || ctx.Err() != nil {
				lags = append(lags, time.Since(acked))
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
	}
	wg.Wait()
	if loadErr != nil && ctx.Err() == nil && !errors.Is(loadErr, context.DeadlineExceeded) {
		logf("lag load: %v", loadErr)
	}
	if len(lags) > 0 {
		p50, p99 := pct(lags, 0.50), pct(lags, 0.99)
		achieved := 0.0
		if lagLoad.Elapsed > 0 {
			achieved = float64(lagLoad.Messages) / lagLoad.Elapsed.Seconds()
		}
		note := fmt.Sprintf("%d probes; load achieved %.0f messages/s", len(lags), achieved)
		rep.add(Result{Group: "End to end", Name: "lag ack → visible in ListConversations, p50 (at 5,000 messages/s)", Value: ms(p50), Unit: "ms", Note: note})
		rep.add(Result{Group: "End to end", Name: "lag ack → visible in ListConversations, p99 (at 5,000 messages/s)", Value: ms(p99), Unit: "ms", Target: "≤ 1,000 ms", Met: met(p99 <= time.Second)})
	}
	if !o.runs("sustained") {
		return nil
	}
	return measureSustained(ctx, o, s, ch, rep, prof, logf)
}

// measureSustained loads ingest as fast as it takes it, from a loadgen
// process of its own, until everything is projected, and reports the rate
// and the CPU every process of the suite used per event meanwhile.
func measureSustained(ctx context.Context, o Options, s *suite, ch driver.Conn, rep *Report, prof *profiler, logf logFunc) error {
	logf("sustained end-to-end throughput (load as fast as ingest takes it, until everything is projected)")
	// Start from a drained pipeline.
	if _, err := waitQuiet(ctx, ch, s, 10*time.Minute, false); err != nil {
		return fmt.Errorf("bench: before the sustained phase: %w", err)
	}
	before, err := countEvents(ctx, ch)
	if err != nil {
		return err
	}
	procs := s.cpuProcesses()
	// What the runner uses with nothing to do (its own polling included),
	// so that the NATS figure can be read against it.
	idle := sampleCPU(procs)
	sleepCtx(ctx, 2*time.Second)
	cpuBefore := sampleCPU(procs)
	start := time.Now()
	// Profiles cover the load and about as long again of draining (the
	// sustained figure's window ends when everything is projected).
	waitProfiles := prof.cpu(ctx, "sustained", 2*o.Phase)
	defer waitProfiles()
	st, client, err := runLoadgenProcess(ctx, s, o.Phase)
	if err != nil {
		return err
	}
	prof.heap(ctx, "sustained-loaded")
	// Everything projected: every consumer (lifecycle, tagging, reporting)
	// has applied every event, including the ones lifecycle and tagging
	// derived, and the stream stopped growing.
	if _, err := waitQuiet(ctx, ch, s, 15*time.Minute, false); err != nil {
		return fmt.Errorf("bench: sustained phase: %w", err)
	}
	cpuAfter := sampleCPU(procs)
	prof.heap(ctx, "sustained-drained")
	after, err := countEvents(ctx, ch)
	if err != nil {
		return err
	}
	took := time.Since(start)
	projected := after - before
	rate := float64(projected) / took.Seconds()
	msgRate := float64(st.Messages) / took.Seconds()
	rep.add(Result{Group: "End to end", Name: "sustained: events acknowledged and projected", Value: rate, Unit: "events/s",
		Note: fmt.Sprintf("%d events acknowledged, %d errors, in %s, all projected after %s", st.Acked, st.Errors, st.Elapsed.Round(time.Second), took.Round(time.Second))})
	rep.add(Result{Group: "End to end", Name: "sustained: messages acknowledged and projected", Value: msgRate, Unit: "messages/s",
		Target: "≥ 10,000 messages/s", Met: met(msgRate >= 10000)})
	addCPU(rep, procs, cpuBefore, cpuAfter, projected, client)
	// What each process uses with nothing to do (background merges, the
	// runner's polling), so that its figure can be read against it.
	for name := range procs {
		if r := find(rep, name+": CPU per event"); r != nil {
			r.Note += fmt.Sprintf("; idle before the phase: %.0f ms CPU per s", (cpuBefore[name]-idle[name])*1000/2)
		}
	}
	return nil
}

// cpuProcesses names the process trees whose CPU the bench reads: each
// service, the stack runner (this process, which runs the embedded NATS
// server), PostgreSQL's postmaster (its tree is the cluster) and the
// ClickHouse server.
func (s *suite) cpuProcesses() map[string]int {
	out := map[string]int{}
	for name, pid := range s.PIDs() {
		out[name] = pid
	}
	out[runnerProcess] = os.Getpid()
	for name, pid := range s.InfraPIDs() {
		out[name] = pid
	}
	return out
}

const runnerProcess = "NATS JetStream (stack runner process)"

// The CPU group's row names.
const (
	cpuTotalName  = "all processes: CPU per event"
	cpuClientName = "loadgen (the client, not in the sum): CPU per event"
)

// addCPU reports each process's CPU µs per projected event between the two
// samples, their sum against the target, and the client's.
func addCPU(rep *Report, procs map[string]int, before, after cpuSample, events uint64, client float64) {
	const group = "CPU per event (sustained phase)"
	if events == 0 {
		rep.Notes = append(rep.Notes, "No event was projected in the sustained phase; CPU per event is not reported.")
		return
	}
	per := func(sec float64) float64 { return sec * 1e6 / float64(events) }
	names := make([]string, 0, len(procs))
	for n := range procs {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return cpuOrder(names[i]) < cpuOrder(names[j]) || cpuOrder(names[i]) == cpuOrder(names[j]) && names[i] < names[j]
	})
	var sum float64
	for _, n := range names {
		b, okB := before[n]
		a, okA := after[n]
		if !okA || !okB || a < b {
			rep.Notes = append(rep.Notes, fmt.Sprintf("The CPU time of %s could not be read across the sustained phase (it restarted or exited); the sum lacks it.", n))
			continue
		}
		sum += a - b
		rep.add(Result{Group: group, Name: n + ": CPU per event", Value: per(a - b), Unit: "µs", Note: fmt.Sprintf("%.1f CPU s", a-b)})
	}
	rep.add(Result{Group: group, Name: cpuTotalName, Value: per(sum), Unit: "µs", Target: "≤ 100 µs", Met: met(per(sum) <= 100),
		Note: fmt.Sprintf("%.1f CPU s over %d events projected, derived events included", sum, events)})
	rep.add(Result{Group: group, Name: cpuClientName, Value: per(client), Unit: "µs", Note: fmt.Sprintf("%.1f CPU s", client)})
}

// cpuOrder lists services first, then NATS, PostgreSQL and ClickHouse.
func cpuOrder(name string) int {
	for i, s := range stack.Services {
		if s == name {
			return i
		}
	}
	switch name {
	case runnerProcess:
		return 10
	case "postgres":
		return 11
	}
	return 12
}

// runLoadgenProcess runs the loadgen binary for d (16 senders, requests of
// 100 events) and returns its summary and the CPU seconds it used.
func runLoadgenProcess(ctx context.Context, s *suite, d time.Duration) (loadgen.Stats, float64, error) {
	var out, errOut strings.Builder
	cmd := exec.CommandContext(ctx, s.loadgen, "--ingest-addr", s.GRPCAddr("ingest"), "--api-key", s.DemoKey, "--api-key-tenant", s.DemoTenant,
		"--conversations", "1000000", "--duration", d.String(), "--concurrency", "16", "--mode", "batch", "--batch-size", "100", "--seed", "3")
	cmd.Stdout, cmd.Stderr = &out, &errOut
	runErr := cmd.Run()
	st, perr := parseLoadgenSummary(out.String())
	if perr != nil {
		return st, 0, fmt.Errorf("bench: loadgen: %v (%v)\n%s", perr, runErr, tailLines(errOut.String(), 10))
	}
	var cpu float64
	if ps := cmd.ProcessState; ps != nil {
		cpu = (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	return st, cpu, nil
}

// parseLoadgenSummary reads the counts of loadgen's summary.
func parseLoadgenSummary(out string) (loadgen.Stats, error) {
	var st loadgen.Stats
	seen := 0
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		var secs float64
		switch {
		case strings.HasPrefix(line, "events "):
			if _, err := fmt.Sscanf(line, "events %d sent, %d acknowledged (%d duplicates), %d errors", &st.Events, &st.Acked, &st.Duplicates, &st.Errors); err == nil {
				seen++
			}
		case strings.HasPrefix(line, "messages "):
			if _, err := fmt.Sscanf(line, "messages %d, closes %d", &st.Messages, &st.Closes); err == nil {
				seen++
			}
		case strings.HasPrefix(line, "loadgen: "):
			if i := strings.LastIndex(line, ", "); i >= 0 {
				if _, err := fmt.Sscanf(line[i+2:], "%fs", &secs); err == nil {
					st.Elapsed = time.Duration(secs * float64(time.Second))
					seen++
				}
			}
		}
	}
	if seen != 3 {
		return st, fmt.Errorf("no summary in its output: %q", tailLines(out, 10))
	}
	return st, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitQuiet waits until every consumer of the conversation stream has
// caught up with it (every partition group's positions, every durable
// consumer's acknowledgements; and the stream stopped growing) and,
// with merges, ClickHouse runs no merge; it returns how long that took.
func waitQuiet(ctx context.Context, ch driver.Conn, s *suite, limit time.Duration, merges bool) (time.Duration, error) {
	nc, err := nats.Connect(s.NATSURL)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	bus, err := eventbus.New(nc, eventbus.Options{})
	if err != nil {
		return 0, err
	}
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: s.PostgresURL, MaxConns: 1})
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	start := time.Now()
	var lastSeq uint64
	quietPolls := 0
	for {
		busy, seq, err := consumersBusy(ctx, bus, pool)
		if err != nil {
			return 0, err
		}
		var running uint64
		if merges {
			if err := ch.QueryRow(ctx, `SELECT count() FROM system.merges`).Scan(&running); err != nil {
				return 0, err
			}
		}
		if busy == "" && running == 0 && seq == lastSeq {
			quietPolls++
			if quietPolls >= 3 {
				return time.Since(start), nil
			}
		} else {
			quietPolls = 0
		}
		lastSeq = seq
		if time.Since(start) > limit {
			if busy == "" {
				busy = fmt.Sprintf("%d ClickHouse merges running", running)
			}
			return 0, fmt.Errorf("not settled after %s: %s", limit, busy)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// consumersBusy names a consumer of the conversation stream that still has
// work ("" when none): a partition group with events after its positions
// or a durable consumer with pending or unacknowledged ones. It returns the
// stream's last sequence.
func consumersBusy(ctx context.Context, bus *eventbus.Bus, pool *pgxpool.Pool) (string, uint64, error) {
	st, _, err := bus.StreamState(ctx, eventbus.ConvStream)
	if err != nil {
		return "", 0, err
	}
	lags, err := bus.DurableLags(ctx, eventbus.ConvStream)
	if err != nil {
		return "", 0, err
	}
	busy := ""
	for name, lag := range lags {
		if lag > 0 {
			busy = fmt.Sprintf("consumer %s has %d pending or unacknowledged", name, lag)
		}
	}
	groups, err := partition.Groups(ctx, pool)
	if err != nil {
		return "", 0, err
	}
	for _, g := range groups {
		n, _, err := partition.Backlog(ctx, bus, pool, eventbus.ConvStream, g)
		if err != nil {
			return "", 0, err
		}
		if n > 0 {
			busy = fmt.Sprintf("partition group %s has %d events to apply", g, n)
		}
	}
	return busy, st.LastSeq, nil
}

func countEvents(ctx context.Context, ch driver.Conn) (uint64, error) {
	var n uint64
	err := ch.QueryRow(ctx, `SELECT count() FROM events`).Scan(&n)
	return n, err
}

// measureClickHouseCeiling inserts rows shaped like messages into a scratch
// table, 10,000 per batch: the most the projector could write.
func measureClickHouseCeiling(ctx context.Context, s *suite, rep *Report, logf logFunc) error {
	logf("raw ClickHouse batch insert rate")
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: s.ClickHouseAddr, Database: "parley", User: "default"})
	if err != nil {
		return err
	}
	defer ch.Close()
	if err := ch.Exec(ctx, `CREATE TABLE IF NOT EXISTS bench_raw_messages AS messages`); err != nil {
		return err
	}
	defer func() { _ = ch.Exec(context.Background(), `DROP TABLE IF EXISTS bench_raw_messages`) }()
	const batches, per = 50, 10_000
	now := time.Now().UTC()
	text := strings.Repeat("where is my order? ", 15)
	start := time.Now()
	for b := range batches {
		batch, err := ch.PrepareBatch(ctx, `INSERT INTO bench_raw_messages (tenant_id, conversation_id, event_id, message_id, role, text, occurred_at, occurred_at_us, recorded_at, stream_seq)`)
		if err != nil {
			return err
		}
		for i := range per {
			n := b*per + i
			if err := batch.Append("bench", fmt.Sprintf("c-%d", n/10), fmt.Sprintf("e-%d", n), "", "visitor", text, now, now.UnixMicro(), now, uint64(n+1)); err != nil {
				return err
			}
		}
		if err := batch.Send(); err != nil {
			return err
		}
	}
	rate := float64(batches*per) / time.Since(start).Seconds()
	rep.add(Result{Group: "Ceilings", Name: "raw ClickHouse batch insert (10,000 rows per insert)", Value: rate, Unit: "rows/s"})
	if sustained := find(rep, "sustained: events acknowledged and projected"); sustained != nil {
		sustained.Reference, sustained.ReferenceValue, sustained.Ratio = "raw ClickHouse insert", rate, sustained.Value/rate
	}
	return nil
}

// measureQueries inserts synthetic conversations (one tenant per size)
// directly into ClickHouse and measures ListConversations and GetDashboard.
func measureQueries(ctx context.Context, o Options, s *suite, rep *Report, logf logFunc) error {
	ch, err := chstore.Open(ctx, config.ClickHouse{Addr: s.ClickHouseAddr, Database: "parley", User: "default"})
	if err != nil {
		return err
	}
	defer ch.Close()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: s.PostgresURL, MaxConns: 2})
	if err != nil {
		return err
	}
	defer pool.Close()
	conn, err := grpc.NewClient(s.GRPCAddr("reporting"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rp := reportingv1.NewReportingServiceClient(conn)
	// Queries are measured on a settled system: every consumer has caught up
	// with the log and ClickHouse has no merge running, as a dashboard
	// reader meets it outside a load test. (During the load phases above,
	// the services and ClickHouse's merges share the same two cores.)
	logf("waiting for every consumer to catch up and ClickHouse merges to finish")
	if waited, err := waitQuiet(ctx, ch, s, 10*time.Minute, true); err != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("The system did not settle before the query measurements (%v); they ran alongside background work.", err))
	} else {
		logf("settled after %s", waited.Round(time.Second))
	}
	for _, n := range o.Sizes {
		tenant := fmt.Sprintf("q%d", n)
		key, err := tenantKey(ctx, pool, tenant)
		if err != nil {
			return err
		}
		logf("generating %d conversations for tenant %s", n, tenant)
		if err := synthetic.Insert(ctx, ch, synthetic.Options{Tenant: tenant, Prefix: "q-", N: n, Span: 60 * 24 * time.Hour, End: time.Now(), Messages: true}); err != nil {
			return err
		}
		if _, err := waitQuiet(ctx, ch, s, 5*time.Minute, true); err != nil {
			logf("ClickHouse still merging after inserting %d conversations: %v", n, err)
		}
		authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
		label := humanCount(n)
		cases := []struct {
			name string
			call func() error
			tgt  time.Duration
		}{
			{"ListConversations, default view (last 24 h)", func() error {
				_, err := rp.ListConversations(authed, &reportingv1.ListConversationsRequest{PageSize: 50})
				return err
			}, 150 * time.Millisecond},
			{"ListConversations, last 30 days + status + channel + tag", func() error {
				_, err := rp.ListConversations(authed, &reportingv1.ListConversationsRequest{PageSize: 50, Filter: &reportingv1.Filter{
					TimeRange: &reportingv1.TimeRange{Preset: "last_30_days"}, Statuses: []string{"ended"},
					Channels: []eventv1.Channel{eventv1.Channel_CHANNEL_WHATSAPP}, Tags: []string{"unidentified-response"}}})
				return err
			}, 150 * time.Millisecond},
			{"ListConversations, last 30 days + text search", func() error {
				_, err := rp.ListConversations(authed, &reportingv1.ListConversationsRequest{PageSize: 50, Filter: &reportingv1.Filter{
					TimeRange: &reportingv1.TimeRange{Preset: "last_30_days"}, Text: "refund"}})
				return err
			}, 300 * time.Millisecond},
			{"ListConversations, all time", func() error {
				_, err := rp.ListConversations(authed, &reportingv1.ListConversationsRequest{PageSize: 50, Filter: &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "all_time"}}})
				return err
			}, 150 * time.Millisecond},
			{"GetDashboard, last 7 days", func() error {
				_, err := rp.GetDashboard(authed, &reportingv1.GetDashboardRequest{Filter: &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "last_7_days"}}})
				return err
			}, 300 * time.Millisecond},
			{"GetDashboard, all time", func() error {
				_, err := rp.GetDashboard(authed, &reportingv1.GetDashboardRequest{Filter: &reportingv1.Filter{TimeRange: &reportingv1.TimeRange{Preset: "all_time"}}})
				return err
			}, 300 * time.Millisecond},
		}
		for _, c := range cases {
			var ds []time.Duration
			for range 20 {
				st := time.Now()
				if err := c.call(); err != nil {
					return fmt.Errorf("bench: %s: %w", c.name, err)
				}
				ds = append(ds, time.Since(st))
			}
			p50, p95 := pct(ds, 0.5), pct(ds, 0.95)
			rep.add(Result{Group: "Queries at " + label + " conversations", Name: c.name + ", p50", Value: ms(p50), Unit: "ms"})
			r := Result{Group: "Queries at " + label + " conversations", Name: c.name + ", p95", Value: ms(p95), Unit: "ms"}
			if n >= 1_000_000 {
				r.Target = fmt.Sprintf("p95 ≤ %d ms", c.tgt.Milliseconds())
				r.Met = met(p95 <= c.tgt)
			}
			rep.add(r)
		}
	}
	return nil
}

// tenantKey creates a tenant with a read key.
func tenantKey(ctx context.Context, pool *pgxpool.Pool, tenant string) (string, error) {
	store := tenancy.NewStore(pool)
	if err := store.CreateTenant(ctx, tenant, "benchmark"); err != nil && !errors.Is(err, tenancy.ErrExists) {
		return "", err
	}
	key, _, err := store.CreateAPIKey(ctx, tenant, "bench", []string{grpcx.ScopeRead})
	return key, err
}

// measureRebuild rebuilds every projection from the log (by now it holds
// every event of the run) and reports the replay rate.
func measureRebuild(ctx context.Context, o Options, s *suite, rep *Report, prof *profiler, logf logFunc) error {
	logf("projection rebuild")
	conn, err := grpc.NewClient(s.GRPCAddr("reporting"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	// A rebuild covers every tenant: it needs the stack's platform operator
	// key, not the demo tenant's.
	key, err := os.ReadFile(filepath.Join(s.Dir, "operator-api-key"))
	if err != nil {
		return fmt.Errorf("bench: rebuild needs the stack's operator key: %w", err)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(key)))
	stream, err := reportingv1.NewReportingServiceClient(conn).RebuildProjections(authed, &reportingv1.RebuildProjectionsRequest{})
	if err != nil {
		return err
	}
	procs := s.cpuProcesses()
	cpuBefore := sampleCPU(procs)
	waitProfiles := prof.cpu(ctx, "rebuild", o.Phase)
	defer waitProfiles()
	var last *reportingv1.RebuildProgress
	for {
		p, err := stream.Recv()
		if err != nil {
			break
		}
		last = p
	}
	if last == nil || last.Phase != "done" {
		return fmt.Errorf("bench: rebuild did not finish: %v", last)
	}
	cpuAfter := sampleCPU(procs)
	rep.add(Result{Group: "Projections", Name: "rebuild: events replayed into fresh tables", Value: last.EventsPerSecond, Unit: "events/s",
		Note: fmt.Sprintf("%d events in %.1f s", last.Events, last.ElapsedSeconds), Target: "≥ 100,000 events/s", Met: met(last.EventsPerSecond >= 100_000)})
	// Where the rebuild's time goes: each process's share of a core while
	// it ran (far below one everywhere means it waits, not computes).
	secs := max(last.ElapsedSeconds, 0.001)
	for _, n := range []string{"reporting", runnerProcess, "clickhouse", "postgres"} {
		b, okB := cpuBefore[n]
		a, okA := cpuAfter[n]
		if okA && okB && a >= b {
			rep.add(Result{Group: "Projections", Name: "rebuild: " + n + ": CPU used (cores)", Value: (a - b) / secs, Unit: "cores",
				Note: fmt.Sprintf("%.1f CPU s", a-b)})
		}
	}
	return nil
}

// measureMemory reports each service's peak resident memory over the whole
// synced run (ingest at full speed and at 10k events/s included).
func measureMemory(s *suite, rep *Report) {
	rss := s.PeakRSS()
	names := make([]string, 0, len(rss))
	for n := range rss {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		mb := float64(rss[n]) / (1 << 20)
		rep.add(Result{Group: "Memory", Name: n + ": peak resident memory (whole run)", Value: mb, Unit: "MB", Target: "< 150 MB", Met: met(mb < 150)})
	}
}

func pct(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(p*float64(len(s)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func humanCount(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

func find(rep *Report, name string) *Result {
	for i := range rep.Results {
		if rep.Results[i].Name == name {
			return &rep.Results[i]
		}
	}
	return nil
}
