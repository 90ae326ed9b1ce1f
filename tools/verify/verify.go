// Package verify checks Parley's exactness after a load run: it compares what
// ingest acknowledged (the ack log of package loadgen) with what the event
// stream PARLEY_CONV, lifecycle's state in PostgreSQL and reporting's
// ClickHouse projections hold. Nothing acknowledged may be lost, nothing may
// be stored twice, and every conversation the client closed must have ended
// exactly once.
//
// The stream is checked at once: an acknowledged event is in it by
// definition of the acknowledgement. Lifecycle and reporting consume the
// stream asynchronously, so their checks are repeated until they pass, stop
// changing, or the settle time is over.
package verify

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/pgstore"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
	"github.com/parley-dev/parley/tools/loadgen"
	"google.golang.org/protobuf/proto"
)

// Config says what to compare.
type Config struct {
	// Acks are the acknowledgements of a load run (loadgen.ReadAcks).
	Acks []loadgen.Ack
	// NATSURL reaches the event stream.
	NATSURL string
	// PostgresURL reaches lifecycle's state (table lifecycle_conversations).
	PostgresURL string
	// ClickHouse reaches reporting's projections (Database default parley).
	ClickHouse config.ClickHouse
	// Settle is the longest wait for lifecycle and reporting to catch up
	// (default 60s).
	Settle time.Duration
	// Stable ends the wait early once no count has changed for this long
	// (default 30s), even while lifecycle or reporting still have events
	// to process.
	Stable time.Duration
	// Poll is the pause between rounds (default 500ms).
	Poll time.Duration
	// Progress, when set, is told about each round that leaves
	// discrepancies that may still resolve.
	Progress func(Round)
}

// The durable consumers whose work verify waits for.
const (
	LifecycleConsumer = "lifecycle"
	ReportingConsumer = "reporting-projector"
)

// Round is one round of checks while waiting for lifecycle and reporting.
type Round struct {
	N       int
	Pending []Problem
	// Behind is how many events each durable consumer (lifecycle,
	// reporting-projector) has not processed yet; missing when unknown.
	Behind map[string]uint64
}

// Problem is one kind of discrepancy (or, in Report.Notes, of noteworthy
// fact) of one tenant.
type Problem struct {
	Tenant string
	// Check names what was compared, e.g. "stream.lost".
	Check string
	// Description says it in words.
	Description string
	Count       int
	// IDs are the first 20 event or conversation ids concerned.
	IDs []string
}

// MaxIDs is how many ids a Problem lists.
const MaxIDs = 20

// Row is one line of a tenant's table.
type Row struct {
	Check            string
	Expected, Actual int
	// Info rows are facts, not checks.
	Info bool
}

// OK tells whether a check row passed.
func (r Row) OK() bool { return r.Info || r.Expected == r.Actual }

// TenantReport holds one tenant's counts. Expected values come from the ack
// log (restricted to what the stream holds where noted), actual ones from
// the stores.
type TenantReport struct {
	Tenant string
	// AckLines is the number of acknowledgements, AckDuplicates how many of
	// them reported a duplicate.
	AckLines, AckDuplicates int
	// Events, Messages and Conversations are distinct acknowledged ones;
	// Closed counts conversations with an acknowledged conversation_closed.
	Events, Messages, Conversations, Closed int

	// Stream: acknowledged events found, lost (missing), stored more than
	// once, and stored under another sequence than acknowledged.
	Stored, Lost, Duplicated, SeqMismatch int
	// Unacknowledged counts ingest's events of these conversations that the
	// ack log does not have (a call whose outcome the client never learnt).
	Unacknowledged int
	// EndedOnce and EndedTwice count conversations with one or more
	// conversation_ended in the stream; NotEnded closed ones without.
	EndedOnce, EndedTwice, NotEnded int
	// EndedWithoutClose counts conversations ended although the client did
	// not close them; Stale of them by the stale timeout.
	EndedWithoutClose, Stale int

	// Lifecycle (PostgreSQL): conversations it knows, ended ones, and
	// closed ones it ended.
	LifecycleKnown, LifecycleEnded, LifecycleClosedEnded int

	// ClickHouse: rows of these conversations in events (from ingest),
	// messages and conversations, the sum of conversations.message_count,
	// and ended conversations.
	CHEvents, CHMessages, CHConversations, CHMessageCount, CHEnded int

	Rows []Row
}

// Report is the outcome of a verification.
type Report struct {
	Tenants []*TenantReport
	// Problems are the discrepancies; none means OK.
	Problems []Problem
	// Notes are facts worth knowing that are not errors.
	Notes []Problem
	// Lost and Duplicated events, and conversations ended exactly once,
	// over all tenants.
	Lost, Duplicated, EndedOnce int
	// Rounds and Waited tell how long lifecycle and reporting took;
	// StreamTime and StoreTime how much of it went into reading the stream
	// and into querying PostgreSQL and ClickHouse.
	Rounds                        int
	Waited, StreamTime, StoreTime time.Duration
}

// OK tells whether there is no discrepancy.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// Run verifies and returns the report. An error means the check could not
// be made (a store unreachable, a bad ack log), not that it failed.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if len(cfg.Acks) == 0 {
		return nil, errors.New("verify: the ack log is empty")
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 60 * time.Second
	}
	if cfg.Stable <= 0 {
		cfg.Stable = 30 * time.Second
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 500 * time.Millisecond
	}
	if cfg.ClickHouse.Database == "" {
		cfg.ClickHouse.Database = "parley"
	}
	if cfg.ClickHouse.User == "" {
		cfg.ClickHouse.User = "default"
	}
	exp, err := expectations(cfg.Acks)
	if err != nil {
		return nil, err
	}

	bus, err := eventbus.Connect(ctx, cfg.NATSURL, "parley-verify", eventbus.Options{})
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer bus.Close()
	pool, err := pgstore.Connect(ctx, config.Postgres{URL: cfg.PostgresURL, MaxConns: 2})
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	defer pool.Close()
	ch, err := clickhouse.Open(&clickhouse.Options{
		Addr:        []string{cfg.ClickHouse.Addr},
		Auth:        clickhouse.Auth{Database: cfg.ClickHouse.Database, Username: cfg.ClickHouse.User, Password: cfg.ClickHouse.Password},
		DialTimeout: 5 * time.Second,
		ReadTimeout: 120 * time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("verify: clickhouse: %w", err)
	}
	defer ch.Close()

	began := time.Now()
	var (
		fingerprint           string
		changed               = began
		rep                   *Report
		streamTime, storeTime time.Duration
		caughtUp              bool // in the previous round
	)
	for round := 1; ; round++ {
		// Read the consumers' backlog first: if it is empty now, everything
		// read below reflects all events acknowledged so far.
		behind := backlog(ctx, bus)
		t0 := time.Now()
		if err := scanStream(ctx, bus, exp); err != nil {
			return nil, err
		}
		t1 := time.Now()
		streamTime += t1.Sub(t0)
		for _, t := range exp.tenants {
			if err := t.readLifecycle(ctx, pool); err != nil {
				return nil, err
			}
			if err := t.readClickHouse(ctx, ch); err != nil {
				return nil, err
			}
		}
		storeTime += time.Since(t1)
		rep = exp.evaluate()
		rep.Rounds, rep.Waited, rep.StreamTime, rep.StoreTime = round, time.Since(began), streamTime, storeTime
		pending := rep.pending()
		if len(pending) == 0 {
			return rep, nil
		}
		if cfg.Progress != nil {
			cfg.Progress(Round{N: round, Pending: pending, Behind: behind})
		}
		fp := rep.fingerprint()
		same := fp == fingerprint
		if !same {
			fingerprint, changed = fp, time.Now()
		}
		// Done waiting: lifecycle and reporting had nothing left to do in
		// two rounds in a row and nothing changed in between (what remains
		// is real), nothing changed for Stable, or Settle is over.
		idle := len(behind) == 2
		for _, n := range behind {
			idle = idle && n == 0
		}
		if (idle && caughtUp && same) || time.Since(changed) >= cfg.Stable || time.Since(began) >= cfg.Settle {
			return rep, nil
		}
		caughtUp = idle
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(cfg.Poll):
		}
	}
}

// backlog returns the events each durable consumer has not processed (not
// yet delivered or not yet acknowledged); consumers that cannot be asked
// are left out.
func backlog(ctx context.Context, bus *eventbus.Bus) map[string]uint64 {
	out := map[string]uint64{}
	for _, name := range []string{LifecycleConsumer, ReportingConsumer} {
		c, err := bus.JetStream().Consumer(ctx, eventbus.ConvStream, name)
		if err != nil {
			continue
		}
		info, err := c.Info(ctx)
		if err != nil {
			continue
		}
		out[name] = info.NumPending + uint64(info.NumAckPending)
	}
	return out
}

// final tells whether a check's outcome cannot change by waiting: the
// stream had every acknowledged event when it was acknowledged.
func final(check string) bool {
	switch check {
	case "ack.inconsistent", "stream.lost", "stream.duplicated", "stream.sequence", "stream.ended_twice":
		return true
	}
	return false
}

// pending returns the problems that may still resolve.
func (r *Report) pending() []Problem {
	var out []Problem
	for _, p := range r.Problems {
		if !final(p.Check) {
			out = append(out, p)
		}
	}
	return out
}

// fingerprint changes whenever any count of the report changes.
func (r *Report) fingerprint() string {
	var b strings.Builder
	for _, t := range r.Tenants {
		for _, row := range t.Rows {
			fmt.Fprintf(&b, "%d,", row.Actual)
		}
	}
	return b.String()
}

// ackedEvent is an acknowledged event and where the stream has it.
type ackedEvent struct {
	id, conv, kind string
	seq            uint64
	stored         []uint64 // stream sequences of its copies
}

// convState is what is known of one acknowledged conversation.
type convState struct {
	closed     bool // an acknowledged conversation_closed
	ended      int  // conversation_ended events in the stream
	unacked    map[string]bool
	pgKnown    bool
	pgStatus   string
	pgReason   string
	chEvents   int
	chMessages int
	chRow      bool
	chMsgCount int
	chStatus   string
}

type tenantExp struct {
	tenant       string
	lines, dups  int
	events       map[string]*ackedEvent
	convs        map[string]*convState
	inconsistent []string
	eventsByConv map[string][]*ackedEvent
	convOrder    []string
}

type expectation struct {
	tenants []*tenantExp
	byID    map[string]*tenantExp
	// from is the next stream sequence to read.
	from uint64
}

// expectations groups the ack log by tenant.
func expectations(acks []loadgen.Ack) (*expectation, error) {
	e := &expectation{byID: map[string]*tenantExp{}, from: math.MaxUint64}
	for i, a := range acks {
		if !eventbus.ValidTenantID(a.Tenant) || !eventbus.ValidConversationID(a.Conversation) {
			return nil, fmt.Errorf("verify: ack %d: invalid tenant %q or conversation %q", i+1, a.Tenant, a.Conversation)
		}
		t := e.byID[a.Tenant]
		if t == nil {
			t = &tenantExp{tenant: a.Tenant, events: map[string]*ackedEvent{}, convs: map[string]*convState{}, eventsByConv: map[string][]*ackedEvent{}}
			e.byID[a.Tenant] = t
			e.tenants = append(e.tenants, t)
		}
		t.lines++
		e.from = max(min(e.from, a.Seq), 1)
		if a.Duplicate {
			t.dups++
		}
		if ev, ok := t.events[a.EventID]; ok {
			if ev.seq != a.Seq || ev.conv != a.Conversation || ev.kind != a.Kind {
				t.inconsistent = append(t.inconsistent, a.EventID)
			}
			continue
		}
		ev := &ackedEvent{id: a.EventID, conv: a.Conversation, kind: a.Kind, seq: a.Seq}
		t.events[a.EventID] = ev
		if t.convs[a.Conversation] == nil {
			t.convs[a.Conversation] = &convState{unacked: map[string]bool{}}
			t.convOrder = append(t.convOrder, a.Conversation)
		}
		t.eventsByConv[a.Conversation] = append(t.eventsByConv[a.Conversation], ev)
		if a.Kind == "conversation_closed" {
			t.convs[a.Conversation].closed = true
		}
	}
	slices.SortFunc(e.tenants, func(a, b *tenantExp) int { return strings.Compare(a.tenant, b.tenant) })
	return e, nil
}

// scanStream reads the events that arrived since the last scan, in one
// unfiltered pass that starts at the lowest acknowledged sequence (nothing of
// the run can be older) and decodes only the run's tenants' events. (A
// filtered read is several times slower here, and an ordered consumer with
// one filter subject per tenant slower still.) It decides that it is done
// from the consumer's pending count, not from an empty fetch.
func scanStream(ctx context.Context, bus *eventbus.Bus, e *expectation) error {
	horizon, err := bus.LastSequence(ctx)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if horizon < e.from {
		return nil
	}
	cons, err := bus.JetStream().OrderedConsumer(ctx, eventbus.ConvStream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   e.from,
	})
	if err != nil {
		return fmt.Errorf("verify: reading %s: %w", eventbus.ConvStream, err)
	}
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return fmt.Errorf("verify: reading %s: %w", eventbus.ConvStream, err)
		}
		n, pending := 0, uint64(0)
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("verify: reading %s: %w", eventbus.ConvStream, err)
			}
			e.from, pending = meta.Sequence.Stream+1, meta.NumPending
			n++
			tenant, _, _, err := eventbus.ParseConvSubject(m.Subject())
			t := e.byID[tenant]
			if err != nil || t == nil {
				continue
			}
			var env eventv1.Envelope
			if err := proto.Unmarshal(m.Data(), &env); err != nil {
				return fmt.Errorf("verify: %s sequence %d: undecodable envelope: %w", eventbus.ConvStream, meta.Sequence.Stream, err)
			}
			t.observe(&env, meta.Sequence.Stream)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("verify: reading %s: %w", eventbus.ConvStream, err)
		}
		if e.from > horizon {
			return nil
		}
		if n == 0 {
			info, err := cons.Info(ctx)
			if err != nil {
				return fmt.Errorf("verify: reading %s: %w", eventbus.ConvStream, err)
			}
			pending = info.NumPending
		}
		if pending == 0 {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// observe records one stored event of the tenant.
func (t *tenantExp) observe(env *eventv1.Envelope, seq uint64) {
	c := t.convs[env.GetConversationId()]
	if c == nil {
		return
	}
	if ev, ok := t.events[env.GetEventId()]; ok && ev.conv == env.GetConversationId() {
		ev.stored = append(ev.stored, seq)
		return
	}
	switch {
	case eventbus.Kind(env) == "conversation_ended":
		c.ended++
	case env.GetProducer() == "ingest" || env.GetProducer() == "":
		c.unacked[env.GetEventId()] = true
	}
}

func (t *tenantExp) readLifecycle(ctx context.Context, pool *pgxpool.Pool) error {
	rows, err := pool.Query(ctx, `SELECT conversation_id, status, COALESCE(end_reason, '') FROM lifecycle_conversations WHERE tenant_id = $1`, t.tenant)
	if err != nil {
		return fmt.Errorf("verify: lifecycle_conversations: %w", err)
	}
	defer rows.Close()
	for _, c := range t.convs {
		c.pgKnown, c.pgStatus, c.pgReason = false, "", ""
	}
	for rows.Next() {
		var id, st, reason string
		if err := rows.Scan(&id, &st, &reason); err != nil {
			return fmt.Errorf("verify: lifecycle_conversations: %w", err)
		}
		if c := t.convs[id]; c != nil {
			c.pgKnown, c.pgStatus, c.pgReason = true, st, reason
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify: lifecycle_conversations: %w", err)
	}
	return nil
}

func (t *tenantExp) readClickHouse(ctx context.Context, ch driver.Conn) error {
	for _, c := range t.convs {
		c.chEvents, c.chMessages, c.chRow, c.chMsgCount, c.chStatus = 0, 0, false, 0, ""
	}
	counts := func(table, where string, set func(*convState, int)) error {
		rows, err := ch.Query(ctx, `SELECT conversation_id, count() FROM `+table+` FINAL WHERE tenant_id = ?`+where+` GROUP BY conversation_id`, t.tenant)
		if err != nil {
			return fmt.Errorf("verify: clickhouse %s: %w", table, err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var n uint64
			if err := rows.Scan(&id, &n); err != nil {
				return fmt.Errorf("verify: clickhouse %s: %w", table, err)
			}
			if c := t.convs[id]; c != nil {
				set(c, int(n))
			}
		}
		return rows.Err()
	}
	if err := counts("events", ` AND producer IN ('', 'ingest')`, func(c *convState, n int) { c.chEvents = n }); err != nil {
		return err
	}
	if err := counts("messages", "", func(c *convState, n int) { c.chMessages = n }); err != nil {
		return err
	}
	rows, err := ch.Query(ctx, `SELECT conversation_id, message_count, toString(status) FROM conversations FINAL WHERE tenant_id = ?`, t.tenant)
	if err != nil {
		return fmt.Errorf("verify: clickhouse conversations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, st string
		var n uint32
		if err := rows.Scan(&id, &n, &st); err != nil {
			return fmt.Errorf("verify: clickhouse conversations: %w", err)
		}
		if c := t.convs[id]; c != nil {
			c.chRow, c.chMsgCount, c.chStatus = true, int(n), st
		}
	}
	return rows.Err()
}

// evaluate compares everything read so far.
func (e *expectation) evaluate() *Report {
	rep := &Report{}
	for _, t := range e.tenants {
		tr := &TenantReport{Tenant: t.tenant, AckLines: t.lines, AckDuplicates: t.dups, Events: len(t.events)}
		var ids = map[string][]string{}
		add := func(check string, id string) { ids[check] = append(ids[check], id) }
		for _, id := range t.inconsistent {
			add("ack.inconsistent", id)
		}
		streamEnded, pgEnded := 0, 0
		var unacked int
		for _, conv := range t.convOrder {
			c := t.convs[conv]
			present, messages, closed := 0, 0, false
			for _, ev := range t.eventsByConv[conv] {
				if ev.kind == "message_posted" {
					tr.Messages++
				}
				switch {
				case len(ev.stored) == 0:
					tr.Lost++
					add("stream.lost", ev.id)
					continue
				case len(ev.stored) > 1:
					tr.Duplicated++
					add("stream.duplicated", ev.id)
				}
				if ev.stored[0] != ev.seq {
					tr.SeqMismatch++
					add("stream.sequence", ev.id)
				}
				present++
				if ev.kind == "message_posted" {
					messages++
				}
				if ev.kind == "conversation_closed" {
					closed = true
				}
			}
			tr.Stored += present
			unacked += len(c.unacked)
			if present == 0 {
				continue // nothing of it reached the stream: nothing to project
			}
			tr.Conversations++
			pgIsEnded := c.pgStatus == "ended"
			if closed {
				tr.Closed++
				if c.ended == 0 {
					tr.NotEnded++
					add("lifecycle.not_ended", conv)
				}
				if pgIsEnded {
					tr.LifecycleClosedEnded++
				} else {
					add("lifecycle.closed_active", conv)
				}
			} else if c.ended > 0 || pgIsEnded {
				tr.EndedWithoutClose++
				if c.pgReason == "END_REASON_STALE_TIMEOUT" {
					tr.Stale++
				}
			}
			switch {
			case c.ended == 1:
				tr.EndedOnce++
			case c.ended > 1:
				tr.EndedTwice++
				add("stream.ended_twice", conv)
			}
			if c.ended > 0 {
				streamEnded++
			}
			if c.pgKnown {
				tr.LifecycleKnown++
			} else {
				add("lifecycle.unknown", conv)
			}
			if pgIsEnded {
				pgEnded++
				tr.LifecycleEnded++
			}
			if pgIsEnded != (c.ended > 0) {
				add("lifecycle.stream_mismatch", conv)
			}
			tr.CHEvents += c.chEvents
			tr.CHMessages += c.chMessages
			tr.CHMessageCount += c.chMsgCount
			if c.chEvents != present {
				add("clickhouse.events", conv)
			}
			if c.chMessages != messages {
				add("clickhouse.messages", conv)
			}
			if c.chRow {
				tr.CHConversations++
				if c.chMsgCount != messages {
					add("clickhouse.message_count", conv)
				}
			} else {
				add("clickhouse.conversations", conv)
			}
			if c.chStatus == "ended" {
				tr.CHEnded++
			}
			if (c.chStatus == "ended") != pgIsEnded {
				add("clickhouse.ended", conv)
			}
		}
		tr.Unacknowledged = unacked
		presentMessages := 0
		for _, ev := range t.events {
			if ev.kind == "message_posted" && len(ev.stored) > 0 {
				presentMessages++
			}
		}
		tr.Rows = []Row{
			{Check: "stream: acknowledged events stored", Expected: tr.Events, Actual: tr.Stored},
			{Check: "stream: events stored more than once", Expected: 0, Actual: tr.Duplicated},
			{Check: "stream: sequence differs from the ack", Expected: 0, Actual: tr.SeqMismatch},
			{Check: "stream: closed conversations ended", Expected: tr.Closed, Actual: tr.Closed - tr.NotEnded},
			{Check: "stream: conversations ended more than once", Expected: 0, Actual: tr.EndedTwice},
			{Check: "lifecycle: conversations known", Expected: tr.Conversations, Actual: tr.LifecycleKnown},
			{Check: "lifecycle: closed conversations ended", Expected: tr.Closed, Actual: tr.LifecycleClosedEnded},
			{Check: "lifecycle: ended = conversation_ended in stream", Expected: streamEnded, Actual: pgEnded},
			{Check: "clickhouse: events (from ingest)", Expected: tr.Stored, Actual: tr.CHEvents},
			{Check: "clickhouse: messages", Expected: presentMessages, Actual: tr.CHMessages},
			{Check: "clickhouse: conversations", Expected: tr.Conversations, Actual: tr.CHConversations},
			{Check: "clickhouse: sum of message_count", Expected: presentMessages, Actual: tr.CHMessageCount},
			{Check: "clickhouse: ended conversations", Expected: pgEnded, Actual: tr.CHEnded},
			{Check: "info: ended without a close (stale timeout)", Actual: tr.Stale, Info: true},
			{Check: "info: ended without a close (other)", Actual: tr.EndedWithoutClose - tr.Stale, Info: true},
			{Check: "info: stored, never acknowledged (ingest)", Actual: tr.Unacknowledged, Info: true},
			{Check: "info: acknowledgements that were duplicates", Actual: tr.AckDuplicates, Info: true},
		}
		rep.Tenants = append(rep.Tenants, tr)
		rep.Lost += tr.Lost
		rep.Duplicated += tr.Duplicated
		rep.EndedOnce += tr.EndedOnce
		for _, check := range slices.Sorted(maps.Keys(ids)) {
			list := ids[check]
			rep.Problems = append(rep.Problems, Problem{Tenant: t.tenant, Check: check, Description: describe(check), Count: len(list), IDs: list[:min(len(list), MaxIDs)]})
		}
		if n := tr.EndedWithoutClose; n > 0 {
			rep.Notes = append(rep.Notes, Problem{Tenant: t.tenant, Check: "info.ended_without_close", Count: n,
				Description: fmt.Sprintf("conversations ended although the client did not close them (%d by the stale timeout)", tr.Stale)})
		}
		if unacked > 0 {
			rep.Notes = append(rep.Notes, Problem{Tenant: t.tenant, Check: "info.unacknowledged", Count: unacked,
				Description: "events from ingest in these conversations that the ack log does not have (calls whose outcome the client never learnt)"})
		}
	}
	return rep
}

// describe says in words what a check's problem is.
func describe(check string) string {
	switch check {
	case "ack.inconsistent":
		return "event ids acknowledged twice with different sequences, conversations or kinds"
	case "stream.lost":
		return "acknowledged events missing from the stream (lost)"
	case "stream.duplicated":
		return "events stored more than once in the stream (duplicated)"
	case "stream.sequence":
		return "events stored under another sequence than acknowledged"
	case "stream.ended_twice":
		return "conversations with more than one conversation_ended"
	case "lifecycle.not_ended":
		return "closed conversations without conversation_ended in the stream"
	case "lifecycle.closed_active":
		return "closed conversations that lifecycle (PostgreSQL) has not ended"
	case "lifecycle.unknown":
		return "conversations lifecycle (PostgreSQL) does not know"
	case "lifecycle.stream_mismatch":
		return "conversations ended in PostgreSQL but not in the stream, or the other way round"
	case "clickhouse.events":
		return "conversations whose events FINAL count (producer ingest) differs from the acknowledged events"
	case "clickhouse.messages":
		return "conversations whose messages FINAL count differs from the acknowledged messages"
	case "clickhouse.conversations":
		return "conversations missing from conversations FINAL"
	case "clickhouse.message_count":
		return "conversations whose message_count differs from the acknowledged messages"
	case "clickhouse.ended":
		return "conversations whose ClickHouse status differs from lifecycle's"
	}
	return check
}
