package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/partition"
	"github.com/parley-dev/parley/services/reporting/internal/convrow"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
	"github.com/parley-dev/parley/services/reporting/internal/statestore"
	"go.opentelemetry.io/otel/trace"
)

// Durable is the projector's consumer name: its partition leases and
// positions, its dead letters (parley.dlq.reporting-projector), and the
// durable JetStream consumer of earlier versions.
const Durable = "reporting-projector"

// Tables names the ClickHouse tables a projector writes.
type Tables struct{ Events, Messages, Conversations, MessageTokens, VisitorConversations string }

// LiveTables are the tables readers query.
var LiveTables = Tables{Events: "events", Messages: "messages", Conversations: "conversations", MessageTokens: "message_tokens",
	VisitorConversations: "visitor_conversations"}

// Suffixed returns the tables with a suffix, e.g. "_rebuild".
func (t Tables) Suffixed(suffix string) Tables {
	return Tables{Events: t.Events + suffix, Messages: t.Messages + suffix, Conversations: t.Conversations + suffix, MessageTokens: t.MessageTokens + suffix,
		VisitorConversations: t.VisitorConversations + suffix}
}

// All lists the tables.
func (t Tables) All() []string {
	return []string{t.Events, t.Messages, t.Conversations, t.MessageTokens, t.VisitorConversations}
}

// Projector writes batches of events to ClickHouse.
type Projector struct {
	conn    driver.Conn
	states  *statestore.Store
	tables  Tables
	log     *slog.Logger
	scratch sync.Pool // *scratch, reused from batch to batch
}

// scratch is the working memory of one Handle call.
type scratch struct {
	rows     Rows
	keys     []statestore.Key       // the batch's conversations
	index    map[statestore.Key]int // position in keys
	of       []int                  // each event's position in keys
	dirty    []bool                 // by position in keys
	changed  []*convstate.State
	events   eventCols
	messages messageCols
	tokens   tokenCols
	visitors visitorCols
	// started: the batch holds a conversation_started of the conversation
	// (by position in keys).
	started []bool
	convs   *convrow.Batch
}

// reset empties s for the next batch, keeping its capacity but none of the
// batch's data.
func (s *scratch) reset() {
	clear(s.rows.Events)
	clear(s.rows.Messages)
	s.rows.Events, s.rows.Messages = s.rows.Events[:0], s.rows.Messages[:0]
	clear(s.keys)
	s.keys = s.keys[:0]
	clear(s.index)
	s.of = s.of[:0]
	clear(s.changed)
	s.changed = s.changed[:0]
	truncate(&s.events)
	truncate(&s.messages)
	truncate(&s.visitors)
	s.convs.Reset()
}

// New returns a projector writing through conn into tables, keeping fold
// states in states.
func New(conn driver.Conn, states *statestore.Store, tables Tables, log *slog.Logger) *Projector {
	return &Projector{conn: conn, states: states, tables: tables, log: log}
}

// HandlePartition is the live projector's partition.Handler: it writes the
// batch's rows to ClickHouse first, then commits the fold states and the
// partition's position in one PostgreSQL transaction, fenced by the
// partition's lease and by the tables' generation (a rebuild's swap in
// between makes it project the batch again, into the new tables). A crash
// between the two replays the batch into idempotent rows.
func (p *Projector) HandlePartition(ctx context.Context, b partition.Batch) error {
	err := p.handlePartition(ctx, b)
	if errors.Is(err, statestore.ErrSwapped) {
		// Once more, at once, into the tables the rebuild swapped in.
		err = p.handlePartition(ctx, b)
	}
	return err
}

func (p *Projector) handlePartition(ctx context.Context, b partition.Batch) error {
	return p.handleRound(ctx, b.Deliveries, []partition.Batch{b})
}

// HandleRound is the live projector's partition.RoundHandler: as
// HandlePartition, for the batches of every partition read in a round at
// once: one insert per table, then one PostgreSQL transaction for the fold
// states and every partition's position. Partitions hold disjoint
// conversations, so each conversation's events stay in stream order.
func (p *Projector) HandleRound(ctx context.Context, round []partition.Batch) error {
	var all []*eventbus.Delivery
	if len(round) == 1 {
		all = round[0].Deliveries
	} else {
		n := 0
		for _, b := range round {
			n += len(b.Deliveries)
		}
		all = make([]*eventbus.Delivery, 0, n)
		for _, b := range round {
			all = append(all, b.Deliveries...)
		}
	}
	err := p.handleRound(ctx, all, round)
	if errors.Is(err, statestore.ErrSwapped) {
		err = p.handleRound(ctx, all, round)
	}
	return err
}

// handleRound projects events (the deliveries of round) and commits the
// fold states and the round's positions, fenced by the generation.
func (p *Projector) handleRound(ctx context.Context, events []*eventbus.Delivery, round []partition.Batch) error {
	gen, err := p.states.Generation(ctx)
	if err != nil {
		return err
	}
	return p.Project(ctx, events, func(ctx context.Context, changed []*convstate.State) error {
		return p.states.Tx(ctx, func(tx pgx.Tx) error {
			if err := statestore.CheckGeneration(ctx, tx, gen); err != nil {
				return err
			}
			if err := p.states.SaveIn(ctx, tx, changed); err != nil {
				return err
			}
			return partition.CommitRound(ctx, tx, round)
		})
	})
}

// Handle is an eventbus.Handler (rebuilds, tools). It inserts the batch's events and messages,
// folds the batch into the conversations it touches and inserts their new
// states, then saves the fold states; it returns only after all of that is
// durable. A redelivered batch produces identical rows (same keys and
// versions), which ReplacingMergeTree collapses.
func (p *Projector) Handle(ctx context.Context, batch []*eventbus.Delivery) error {
	return p.Project(ctx, batch, p.states.Save)
}

// Project writes the batch's rows to ClickHouse, then calls save with the
// fold states it changed.
func (p *Projector) Project(ctx context.Context, batch []*eventbus.Delivery, save func(context.Context, []*convstate.State) error) error {
	sc, _ := p.scratch.Get().(*scratch)
	if sc == nil {
		sc = &scratch{index: map[statestore.Key]int{}, convs: convrow.NewBatch()}
	}
	defer func() {
		sc.reset()
		p.scratch.Put(sc)
	}()
	rows := &sc.rows
	var lastTrace trace.TraceID
	traceID := ""
	for _, d := range batch {
		if !d.SpanContext.IsValid() {
			traceID, lastTrace = "", trace.TraceID{}
		} else if id := d.SpanContext.TraceID(); id != lastTrace || traceID == "" {
			// Events of one request share a trace: one string for them.
			traceID, lastTrace = id.String(), id
		}
		rows.Add(d.Envelope, d.StreamSeq, traceID)
		k := statestore.Key{TenantID: d.Envelope.TenantId, ConversationID: d.Envelope.ConversationId}
		i, ok := sc.index[k]
		if !ok {
			i = len(sc.keys)
			sc.index[k] = i
			sc.keys = append(sc.keys, k)
		}
		sc.of = append(sc.of, i)
	}
	states, err := p.states.Load(ctx, sc.keys)
	if err != nil {
		return err
	}
	sc.dirty = slices.Grow(sc.dirty[:0], len(sc.keys))[:len(sc.keys)]
	clear(sc.dirty)
	sc.started = slices.Grow(sc.started[:0], len(sc.keys))[:len(sc.keys)]
	clear(sc.started)
	for j, d := range batch {
		i := sc.of[j]
		st := states[i]
		if st == nil {
			st = convstate.New(sc.keys[i].TenantID, sc.keys[i].ConversationID)
			states[i] = st
		}
		// Apply ignores an event at or below the state's sequence: an
		// idempotence guard (a partition is read in stream order, so only a
		// replay after a crash or a swap reaches it).
		if st.Apply(d.Envelope, d.StreamSeq) && !sc.dirty[i] {
			sc.dirty[i] = true
			sc.changed = append(sc.changed, st)
		}
		if d.Envelope.GetConversationStarted() != nil {
			sc.started[i] = true
		}
	}
	for i := range rows.Events {
		sc.events.add(&rows.Events[i])
	}
	if err := p.insert(ctx, p.tables.Events, eventColumns, len(rows.Events), sc.events.columns()); err != nil {
		return fmt.Errorf("projector: insert events: %w", err)
	}
	for i := range rows.Messages {
		sc.messages.add(&rows.Messages[i])
	}
	if err := p.insert(ctx, p.tables.Messages, messageColumns, len(rows.Messages), sc.messages.columns()); err != nil {
		return fmt.Errorf("projector: insert messages: %w", err)
	}
	started := func(tenant, conv string) time.Time {
		return states[sc.index[statestore.Key{TenantID: tenant, ConversationID: conv}]].StartedAt
	}
	if err := p.insertTokens(ctx, &sc.tokens, rows.Messages, started); err != nil {
		return fmt.Errorf("projector: insert message tokens: %w", err)
	}
	for i, st := range states {
		if sc.started[i] && st != nil {
			sc.visitors.add(st)
		}
	}
	if err := p.insert(ctx, p.tables.VisitorConversations, visitorColumns, len(sc.visitors.TenantID), sc.visitors.columns()); err != nil {
		return fmt.Errorf("projector: insert visitor conversations: %w", err)
	}
	for _, st := range sc.changed {
		if err := sc.convs.Add(st); err != nil {
			return eventbus.Permanent(err)
		}
	}
	if err := p.insert(ctx, p.tables.Conversations, convrow.Names(), sc.convs.Len(), sc.convs.Columns()); err != nil {
		return fmt.Errorf("projector: insert conversations: %w", err)
	}
	return save(ctx, sc.changed)
}

// insert writes n rows, given as columns, into table.
func (p *Projector) insert(ctx context.Context, table, columns string, n int, cols []any) error {
	if n == 0 {
		return nil
	}
	b, err := p.conn.PrepareBatch(ctx, `INSERT INTO `+table+` (`+columns+`)`)
	if err != nil {
		return Classify(err)
	}
	for i, c := range cols {
		if err := b.Column(i).Append(c); err != nil {
			_ = b.Abort()
			// A value the column cannot hold: a data error.
			return eventbus.Permanent(fmt.Errorf("column %d: %w", i, err))
		}
	}
	return Classify(b.Send())
}
