// Package verify checks Parley's exactness after a load run: it compares what
// ingest acknowledged (the ack log of package loadgen) with what the event
// stream PARLEY_CONV holds, and every projection — lifecycle's and tagging's
// state in PostgreSQL, reporting's ClickHouse tables — conversation by
// conversation with its own fold of the stream (fold.go). Nothing
// acknowledged may be lost, nothing may be stored twice, every conversation
// the client closed must have ended exactly once, every projection must
// agree with the stream, PARLEY_DLQ must hold nothing of the tenants and no
// partition group may hold one of their conversations.
//
// The stream is checked at once: an acknowledged event is in it by
// definition of the acknowledgement. Lifecycle, tagging and reporting consume
// the stream asynchronously, so their checks are repeated until they pass,
// stop changing, or the settle time is over; how far each consumer is behind
// comes from its partition group's positions (libs/partition) or, for a
// durable JetStream consumer, from the server. The DLQ and the held
// conversations are read once, at the end.
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
	"github.com/parley-dev/parley/libs/config"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/natsauth"
	"github.com/parley-dev/parley/libs/partition"
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
	// NATS holds the NATS credentials and TLS files (PARLEY_NATS_USER,
	// PARLEY_NATS_PASSWORD, PARLEY_NATS_CREDS, ...); its URL is used when
	// NATSURL is empty.
	NATS config.NATS
	// PostgresURL reaches lifecycle's and tagging's state
	// (lifecycle_conversations, tagging_conversations, tagging_applied).
	PostgresURL string
	// ClickHouse reaches reporting's projections (Database default parley).
	ClickHouse config.ClickHouse
	// Settle is the longest wait for the projections to catch up (default
	// 60s).
	Settle time.Duration
	// Stable ends the wait early once no count has changed for this long
	// (default 30s), even while the projections still have events
	// to process.
	Stable time.Duration
	// Poll is the pause between rounds (default 500ms).
	Poll time.Duration
	// Progress, when set, is told about each round that leaves
	// discrepancies that may still resolve.
	Progress func(Round)
	// TaggingMaxMessages is tagging's PARLEY_TAGGING_MAX_MESSAGES (default
	// DefaultTaggingMaxMessages): a message whose id is among that many
	// recent messages is not counted again in tagging's facts.
	TaggingMaxMessages int
}

// The consumers whose work verify waits for: each is a partition group
// (libs/partition) when the database has one of that name, otherwise a
// durable JetStream consumer of PARLEY_CONV.
const (
	LifecycleConsumer = "lifecycle"
	TaggingConsumer   = "tagging"
	ReportingConsumer = "reporting-projector"
)

// Round is one round of checks while waiting for the projections.
type Round struct {
	N       int
	Pending []Problem
	// Behind is how many events each consumer (lifecycle, tagging,
	// reporting-projector, and any other partition group) has not
	// processed yet; missing when unknown.
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
// log (for the stream) or from verify's fold of the stream (for the
// projections), actual ones from the stores.
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

	// ClickHouse: rows of these conversations in events, messages and
	// conversations, the sum of conversations.message_count, and ended
	// conversations.
	CHEvents, CHMessages, CHConversations, CHMessageCount, CHEnded int

	// DeadLetters counts the tenant's messages in PARLEY_DLQ and those of
	// no known tenant.
	DeadLetters int
	// Held counts the tenant's conversations held by a partition group.
	Held int

	Rows []Row
}

// Report is the outcome of a verification.
type Report struct {
	Tenants []*TenantReport
	// Problems are the discrepancies; none means OK.
	Problems []Problem
	// Notes are facts worth knowing that are not errors.
	Notes []Problem
	// Lost and Duplicated events, conversations ended exactly once and
	// dead letters, over all tenants.
	Lost, Duplicated, EndedOnce, DeadLetters int
	// Held counts held conversations over all tenants.
	Held int
	// Rounds and Waited tell how long the projections took;
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
	if cfg.TaggingMaxMessages <= 0 {
		cfg.TaggingMaxMessages = DefaultTaggingMaxMessages
	}
	exp, err := expectations(cfg.Acks)
	if err != nil {
		return nil, err
	}
	exp.window = cfg.TaggingMaxMessages

	if cfg.NATSURL == "" {
		cfg.NATSURL = cfg.NATS.URL
	}
	natsOpts, err := natsauth.ClientOptions("parley-verify", cfg.NATS)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	bus, err := eventbus.Connect(ctx, cfg.NATSURL, "parley-verify", eventbus.Options{}, natsOpts...)
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
		behind := backlog(ctx, bus, pool)
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
			if err := t.readTagging(ctx, pool); err != nil {
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
			break
		}
		if cfg.Progress != nil {
			cfg.Progress(Round{N: round, Pending: pending, Behind: behind})
		}
		fp := rep.fingerprint()
		same := fp == fingerprint
		if !same {
			fingerprint, changed = fp, time.Now()
		}
		// Done waiting: the consumers had nothing left to do in
		// two rounds in a row and nothing changed in between (what remains
		// is real), nothing changed for Stable, or Settle is over.
		idle := true
		for _, name := range []string{LifecycleConsumer, TaggingConsumer, ReportingConsumer} {
			_, known := behind[name]
			idle = idle && known
		}
		for _, n := range behind {
			idle = idle && n == 0
		}
		if (idle && caughtUp && same) || time.Since(changed) >= cfg.Stable || time.Since(began) >= cfg.Settle {
			break
		}
		caughtUp = idle
		select {
		case <-ctx.Done():
			return rep, ctx.Err()
		case <-time.After(cfg.Poll):
		}
	}
	// Held conversations and dead letters do not go away by waiting: read
	// them once, at the end.
	held, err := readHeld(ctx, pool, exp.byID)
	if err != nil {
		return nil, err
	}
	rep.addHeld(held)
	dl, err := readDLQ(ctx, bus, exp.byID)
	if err != nil {
		return nil, err
	}
	rep.addDeadLetters(dl)
	return rep, nil
}

// backlog returns the events each consumer has not processed: for a
// partition group (every group in the database) the events after their
// partition's position (partition.Backlog); for a durable consumer those
// not yet delivered or not yet acknowledged. Consumers that cannot be
// asked are left out.
func backlog(ctx context.Context, bus *eventbus.Bus, pool *pgxpool.Pool) map[string]uint64 {
	out := map[string]uint64{}
	groups, err := partition.Groups(ctx, pool)
	if err != nil {
		groups = nil
	}
	for _, name := range groups {
		if n, known, err := partition.Backlog(ctx, bus, pool, eventbus.ConvStream, name); err == nil && known {
			out[name] = n
		}
	}
	for _, name := range []string{LifecycleConsumer, TaggingConsumer, ReportingConsumer} {
		if slices.Contains(groups, name) {
			continue
		}
		if lag, found, err := bus.ConsumerLag(ctx, eventbus.ConvStream, name); err == nil && found {
			out[name] = lag
		}
	}
	return out
}

// final tells whether a check's outcome cannot change by waiting: the
// stream had every acknowledged event when it was acknowledged.
func final(check string) bool {
	switch check {
	case "ack.inconsistent", "stream.lost", "stream.duplicated", "stream.sequence", "stream.ended_twice", "dlq.dead_letters", "partition.held":
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
			fmt.Fprintf(&b, "%d/%d,", row.Expected, row.Actual)
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
	closed  bool // an acknowledged conversation_closed
	unacked map[string]bool
	// fold is what the stream holds of the conversation.
	fold *streamFold

	pgKnown  bool
	pgStatus string
	pgReason string
	pgCounts lifecycleCounts

	tgKnown  bool
	tgCounts taggingCounts
	tgEnded  bool
	tgReason string
	// tgTags are the distinct tags of tagging_applied, tgIssues the
	// detectors' tags (rule_id builtin:<detector>), both sorted.
	tgTags, tgIssues []string

	chEvents     int
	chMessages   int
	chRow        bool
	chMsgCount   int
	chEventCount int
	chStatus     string
	chReason     string
	chTags       []string
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
	// window is tagging's PARLEY_TAGGING_MAX_MESSAGES.
	window int
}

// expectations groups the ack log by tenant.
func expectations(acks []loadgen.Ack) (*expectation, error) {
	e := &expectation{byID: map[string]*tenantExp{}, from: math.MaxUint64, window: DefaultTaggingMaxMessages}
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
			t.convs[a.Conversation] = &convState{unacked: map[string]bool{}, fold: newStreamFold()}
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
	r, err := bus.Read(ctx, eventbus.ReadOptions{From: e.from})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	for {
		pending := uint64(0)
		n, err := r.Fetch(1000, time.Second, func(m eventbus.LogMsg) error {
			e.from, pending = m.Seq+1, m.Pending
			tenant, _, _, err := eventbus.ParseConvSubject(m.Subject)
			t := e.byID[tenant]
			if err != nil || t == nil {
				return nil
			}
			var env eventv1.Envelope
			if err := proto.Unmarshal(m.Data(), &env); err != nil {
				return fmt.Errorf("verify: %s sequence %d: undecodable envelope: %w", eventbus.ConvStream, m.Seq, err)
			}
			t.observe(&env, m.Seq, e.window)
			return nil
		})
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		if e.from > horizon {
			return nil
		}
		if n == 0 {
			if pending, err = r.Pending(ctx); err != nil {
				return fmt.Errorf("verify: %w", err)
			}
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
func (t *tenantExp) observe(env *eventv1.Envelope, seq uint64, window int) {
	c := t.convs[env.GetConversationId()]
	if c == nil {
		return
	}
	c.fold.observe(env, window)
	if ev, ok := t.events[env.GetEventId()]; ok && ev.conv == env.GetConversationId() {
		ev.stored = append(ev.stored, seq)
		return
	}
	if p := env.GetProducer(); eventbus.Kind(env) != "conversation_ended" && (p == "ingest" || p == "") {
		c.unacked[env.GetEventId()] = true
	}
}

func (t *tenantExp) readLifecycle(ctx context.Context, pool *pgxpool.Pool) error {
	rows, err := pool.Query(ctx, `SELECT conversation_id, status, COALESCE(end_reason, ''), visitor_messages, goals_reached, flows_completed, late_events
		FROM lifecycle_conversations WHERE tenant_id = $1`, t.tenant)
	if err != nil {
		return fmt.Errorf("verify: lifecycle_conversations: %w", err)
	}
	defer rows.Close()
	for _, c := range t.convs {
		c.pgKnown, c.pgStatus, c.pgReason, c.pgCounts = false, "", "", lifecycleCounts{}
	}
	for rows.Next() {
		var id, st, reason string
		var n lifecycleCounts
		if err := rows.Scan(&id, &st, &reason, &n.VisitorMessages, &n.GoalsReached, &n.FlowsCompleted, &n.LateEvents); err != nil {
			return fmt.Errorf("verify: lifecycle_conversations: %w", err)
		}
		if c := t.convs[id]; c != nil {
			c.pgKnown, c.pgStatus, c.pgReason, c.pgCounts = true, st, reason, n
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("verify: lifecycle_conversations: %w", err)
	}
	return nil
}

func (t *tenantExp) readClickHouse(ctx context.Context, ch driver.Conn) error {
	for _, c := range t.convs {
		c.chEvents, c.chMessages, c.chRow, c.chMsgCount, c.chEventCount, c.chStatus, c.chReason, c.chTags = 0, 0, false, 0, 0, "", "", nil
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
	if err := counts("events", "", func(c *convState, n int) { c.chEvents = n }); err != nil {
		return err
	}
	if err := counts("messages", "", func(c *convState, n int) { c.chMessages = n }); err != nil {
		return err
	}
	rows, err := ch.Query(ctx, `SELECT conversation_id, message_count, event_count, toString(status), end_reason, arraySort(tags)
		FROM conversations FINAL WHERE tenant_id = ?`, t.tenant)
	if err != nil {
		return fmt.Errorf("verify: clickhouse conversations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, st, reason string
		var n, events uint32
		var tags []string
		if err := rows.Scan(&id, &n, &events, &st, &reason, &tags); err != nil {
			return fmt.Errorf("verify: clickhouse conversations: %w", err)
		}
		if c := t.convs[id]; c != nil {
			c.chRow, c.chMsgCount, c.chEventCount, c.chStatus, c.chReason, c.chTags = true, int(n), int(events), st, reason, tags
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
		var (
			streamEnded, pgEnded, unacked int
			lcExp, lcAct                  lifecycleCounts
			tgEventsExp, tgEventsAct      int
			tgMsgsExp, tgMsgsAct          int
			tgKnown, tgEnded, tgTagsOK    int
			issuesExp, issuesAct          int
			chExp                         struct{ events, messages, messageCount, eventCount int }
			chEventCount, chTagsOK        int
		)
		for _, conv := range t.convOrder {
			c := t.convs[conv]
			f := c.fold
			present, closed := 0, false
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
			streamIsEnded := f.ended > 0
			reason := f.endReason.String()
			short := enumName(reason, "END_REASON_")

			// Lifecycle (PostgreSQL).
			pgIsEnded := c.pgStatus == "ended"
			if closed {
				tr.Closed++
				if !streamIsEnded {
					tr.NotEnded++
					add("lifecycle.not_ended", conv)
				}
				if pgIsEnded {
					tr.LifecycleClosedEnded++
				} else {
					add("lifecycle.closed_active", conv)
				}
			} else if streamIsEnded || pgIsEnded {
				tr.EndedWithoutClose++
				if c.pgReason == "END_REASON_STALE_TIMEOUT" {
					tr.Stale++
				}
			}
			switch {
			case f.ended == 1:
				tr.EndedOnce++
			case f.ended > 1:
				tr.EndedTwice++
				add("stream.ended_twice", conv)
			}
			if streamIsEnded {
				streamEnded++
			}
			want := f.lc.expected()
			lcExp.add(want)
			if c.pgKnown {
				tr.LifecycleKnown++
				lcAct.add(c.pgCounts)
				if c.pgCounts != want {
					add("lifecycle.counts", conv)
				}
			} else {
				add("lifecycle.unknown", conv)
			}
			if pgIsEnded {
				pgEnded++
				tr.LifecycleEnded++
			}
			if pgIsEnded != streamIsEnded {
				add("lifecycle.stream_mismatch", conv)
			} else if pgIsEnded && c.pgReason != reason {
				add("lifecycle.end_reason", conv)
			}

			// Tagging (PostgreSQL).
			tgEventsExp += f.tg.counts.Events
			tgMsgsExp += f.tg.counts.messages()
			if c.tgKnown {
				tgKnown++
				tgEventsAct += c.tgCounts.Events
				tgMsgsAct += c.tgCounts.messages()
				if c.tgCounts != f.tg.counts {
					add("tagging.counts", conv)
				}
				if c.tgEnded {
					tgEnded++
				}
				if c.tgEnded != streamIsEnded || c.tgReason != short {
					add("tagging.ended", conv)
				}
			} else {
				add("tagging.unknown", conv)
			}
			if slices.Equal(c.tgTags, f.sortedTags()) {
				tgTagsOK++
			} else {
				add("tagging.tags", conv)
			}
			issues := sortedSet(f.issues)
			issuesExp += len(issues)
			issuesAct += len(c.tgIssues)
			if !slices.Equal(c.tgIssues, issues) {
				add("tagging.issues", conv)
			}

			// ClickHouse.
			chExp.events += len(f.ids)
			chExp.messages += f.messages
			chExp.messageCount += f.messagesBeforeEnd
			chExp.eventCount += f.eventCount
			tr.CHEvents += c.chEvents
			tr.CHMessages += c.chMessages
			if c.chEvents != len(f.ids) {
				add("clickhouse.events", conv)
			}
			if c.chMessages != f.messages {
				add("clickhouse.messages", conv)
			}
			if c.chRow {
				tr.CHConversations++
				tr.CHMessageCount += c.chMsgCount
				chEventCount += c.chEventCount
				if c.chMsgCount != f.messagesBeforeEnd {
					add("clickhouse.message_count", conv)
				}
				if c.chEventCount != f.eventCount {
					add("clickhouse.event_count", conv)
				}
				if (c.chStatus == "ended") != streamIsEnded || c.chReason != short {
					add("clickhouse.ended", conv)
				}
				if slices.Equal(c.chTags, f.sortedTags()) {
					chTagsOK++
				} else {
					add("clickhouse.tags", conv)
				}
			} else {
				add("clickhouse.conversations", conv)
			}
			if c.chStatus == "ended" {
				tr.CHEnded++
			}
		}
		tr.Unacknowledged = unacked
		tr.Rows = []Row{
			{Check: "stream: acknowledged events stored", Expected: tr.Events, Actual: tr.Stored},
			{Check: "stream: events stored more than once", Expected: 0, Actual: tr.Duplicated},
			{Check: "stream: sequence differs from the ack", Expected: 0, Actual: tr.SeqMismatch},
			{Check: "stream: closed conversations ended", Expected: tr.Closed, Actual: tr.Closed - tr.NotEnded},
			{Check: "stream: conversations ended more than once", Expected: 0, Actual: tr.EndedTwice},
			{Check: "lifecycle: conversations known", Expected: tr.Conversations, Actual: tr.LifecycleKnown},
			{Check: "lifecycle: closed conversations ended", Expected: tr.Closed, Actual: tr.LifecycleClosedEnded},
			{Check: "lifecycle: ended = conversation_ended in stream", Expected: streamEnded, Actual: pgEnded},
			{Check: "lifecycle: visitor messages", Expected: lcExp.VisitorMessages, Actual: lcAct.VisitorMessages},
			{Check: "lifecycle: goals reached", Expected: lcExp.GoalsReached, Actual: lcAct.GoalsReached},
			{Check: "lifecycle: flows completed", Expected: lcExp.FlowsCompleted, Actual: lcAct.FlowsCompleted},
			{Check: "lifecycle: late events", Expected: lcExp.LateEvents, Actual: lcAct.LateEvents},
			{Check: "tagging: conversations known", Expected: tr.Conversations, Actual: tgKnown},
			{Check: "tagging: events folded", Expected: tgEventsExp, Actual: tgEventsAct},
			{Check: "tagging: messages folded", Expected: tgMsgsExp, Actual: tgMsgsAct},
			{Check: "tagging: ended = conversation_ended in stream", Expected: streamEnded, Actual: tgEnded},
			{Check: "tagging: conversations with the stream's tags", Expected: tr.Conversations, Actual: tgTagsOK},
			{Check: "tagging: issues detected", Expected: issuesExp, Actual: issuesAct},
			{Check: "clickhouse: events", Expected: chExp.events, Actual: tr.CHEvents},
			{Check: "clickhouse: messages", Expected: chExp.messages, Actual: tr.CHMessages},
			{Check: "clickhouse: conversations", Expected: tr.Conversations, Actual: tr.CHConversations},
			{Check: "clickhouse: sum of message_count", Expected: chExp.messageCount, Actual: tr.CHMessageCount},
			{Check: "clickhouse: sum of event_count", Expected: chExp.eventCount, Actual: chEventCount},
			{Check: "clickhouse: ended conversations", Expected: streamEnded, Actual: tr.CHEnded},
			{Check: "clickhouse: conversations with the stream's tags", Expected: tr.Conversations, Actual: chTagsOK},
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

// addDeadLetters adds a row per tenant and a final problem per tenant with
// dead letters (UnknownTenant's count for every tenant's row).
func (r *Report) addDeadLetters(dl map[string]*deadLetters) {
	unknown := 0
	if d := dl[UnknownTenant]; d != nil {
		unknown = d.count
	}
	for _, t := range r.Tenants {
		n := unknown
		if d := dl[t.Tenant]; d != nil {
			n += d.count
		}
		t.DeadLetters = n
		r.DeadLetters += n - unknown
		t.Rows = append(t.Rows, Row{Check: "dlq: dead letters (this tenant or none)", Expected: 0, Actual: n})
	}
	r.DeadLetters += unknown
	for _, tenant := range slices.Sorted(maps.Keys(dl)) {
		d := dl[tenant]
		r.Problems = append(r.Problems, Problem{Tenant: tenant, Check: "dlq.dead_letters", Description: d.describe(), Count: d.count, IDs: d.first})
	}
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
	case "lifecycle.end_reason":
		return "conversations whose end_reason in PostgreSQL differs from the stream's conversation_ended"
	case "lifecycle.counts":
		return "conversations whose visitor_messages, goals_reached, flows_completed or late_events (PostgreSQL) differ from the stream"
	case "tagging.unknown":
		return "conversations tagging (tagging_conversations) does not know"
	case "tagging.counts":
		return "conversations whose facts (events, visitor, bot or agent messages) differ from the stream"
	case "tagging.ended":
		return "conversations whose facts' ended or end_reason differ from the stream's conversation_ended"
	case "tagging.tags":
		return "conversations whose tags in tagging_applied differ from the stream's tag_applied/tag_removed"
	case "tagging.issues":
		return "conversations whose detector tags in tagging_applied differ from the stream's issue_detected"
	case "clickhouse.events":
		return "conversations whose events FINAL rows differ from the distinct event ids in the stream"
	case "clickhouse.messages":
		return "conversations whose messages FINAL rows differ from the distinct message_posted in the stream"
	case "clickhouse.conversations":
		return "conversations missing from conversations FINAL"
	case "clickhouse.message_count":
		return "conversations whose message_count differs from the distinct messages before the end in the stream"
	case "clickhouse.event_count":
		return "conversations whose event_count differs from the stream"
	case "clickhouse.ended":
		return "conversations whose ClickHouse status or end_reason differs from the stream's conversation_ended"
	case "clickhouse.tags":
		return "conversations whose ClickHouse tags differ from the stream's tag_applied/tag_removed"
	}
	return check
}
