package store

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	taggingv1 "github.com/parley-dev/parley/proto/parley/tagging/v1"
	"google.golang.org/protobuf/proto"
)

// Live tagging's batch I/O: ReadBatch at the start of a batch's
// transaction, QueueSaveStates and QueueApply at its end, each a pipeline
// of set-based statements.
//
// Conversations recently touched are kept by the consumer between batches
// (ConvState values). Such a state tells ReadBatch which applied_seq and
// tags_rev it mirrors; as long as the row is still at those values,
// PostgreSQL sends neither facts nor tags (the stored row wins otherwise:
// another writer). ReadBatch also returns where each row is (ctid), so that
// the write at the end of the batch updates it there without searching the
// primary key again.

// BatchRead is what live tagging reads at the start of a batch.
type BatchRead struct {
	// Generations of the batch's tenants (0 for a tenant without a row).
	Generations map[string]int64
	// States has one state per key; Stored is false for conversations
	// tagging has not stored yet. Tags is filled in for every one.
	States map[ConvKey]*ConvState
}

// readStatesSQL reads each key's state and where its row is (ctid). $3 is
// the applied_seq of a state the caller holds (-1: none): while the row is
// still at it, facts and last_event are not sent. The row is found by key,
// not at a ctid the caller may know: reading a page through an index prunes
// its dead row versions, which keeps the updates that follow HOT.
const readStatesSQL = `SELECT k.t, k.c, c.ctid, c.applied_seq, c.evaluated_gen, c.tags_rev,
		CASE WHEN c.applied_seq = k.s THEN NULL ELSE c.facts END,
		CASE WHEN c.applied_seq = k.s THEN NULL ELSE c.last_event END
	FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(t, c, s)
	LEFT JOIN tagging_conversations c ON c.tenant_id = k.t AND c.conversation_id = k.c`

// readTagsSQL reads the tags in effect on the conversations of $1 and $2.
const readTagsSQL = `SELECT x.tenant_id, x.conversation_id, x.rule_id, x.tag, x.rule_version
	FROM tagging_applied x JOIN unnest($1::text[], $2::text[]) AS k(t, c) ON x.tenant_id = k.t AND x.conversation_id = k.c`

// ReadBatch takes a live batch's locks and reads its conversations: the
// tenants' rows FOR SHARE (see LockTenants), one advisory lock per
// conversation (see LockConversations), then, under those locks, each
// conversation's state and tags in effect, in one round trip.
//
// held are states the caller kept from earlier batches. A held state whose
// applied_seq and tags_rev are still the stored ones is used as it is (with
// the stored evaluated_gen and ctid), without its facts or tags being sent
// or decoded again; when the stored row moved on (another writer) or is
// gone, the stored row wins (reading its tags takes another round trip).
// The states returned are the caller's to change.
func ReadBatch(ctx context.Context, tx pgx.Tx, tenants []string, keys []ConvKey, held map[ConvKey]*ConvState) (BatchRead, error) {
	out := BatchRead{
		Generations: make(map[string]int64, len(tenants)),
		States:      make(map[ConvKey]*ConvState, len(keys)),
	}
	sortedTenants := slices.Clone(tenants)
	slices.Sort(sortedTenants)
	sortedTenants = slices.Compact(sortedTenants)
	for _, t := range sortedTenants {
		out.Generations[t] = 0
	}
	locks := make([]int64, 0, len(keys))
	for _, k := range keys {
		locks = append(locks, lockKey(k))
	}
	slices.Sort(locks)
	locks = slices.Compact(locks)
	ts, cs := splitKeys(keys)
	seqs := make([]int64, len(keys))
	var unheld []ConvKey
	for i, k := range keys {
		seqs[i] = -1
		if st := held[k]; st != nil {
			seqs[i] = int64(st.AppliedSeq)
		} else {
			unheld = append(unheld, k)
		}
	}
	// Conversations whose tags must be read: those not held, and held ones
	// whose tags_rev moved.
	stale := map[ConvKey]bool{}

	b := &pgx.Batch{}
	b.Queue(`SELECT tenant_id, generation FROM tagging_tenants WHERE tenant_id = ANY($1) ORDER BY tenant_id FOR SHARE`, sortedTenants).
		Query(func(rows pgx.Rows) error {
			var t string
			var g int64
			_, err := pgx.ForEachRow(rows, []any{&t, &g}, func() error { out.Generations[t] = g; return nil })
			if err != nil {
				return fmt.Errorf("store: lock tenants: %w", err)
			}
			return nil
		})
	b.Queue(`SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) WITH ORDINALITY AS u(k, o) ORDER BY o`, locks).
		Exec(func(pgconn.CommandTag) error { return nil })
	b.Queue(readStatesSQL, ts, cs, seqs).Query(func(rows pgx.Rows) error {
		var k ConvKey
		var id pgtype.TID
		var seq, gen, rev *int64
		var factsB, lastB []byte
		_, err := pgx.ForEachRow(rows, []any{&k.TenantID, &k.ConversationID, &id, &seq, &gen, &rev, &factsB, &lastB}, func() error {
			h := held[k]
			var st *ConvState
			switch {
			case seq == nil:
				st = &ConvState{Facts: &taggingv1.RuleConversation{}, LastEvent: &taggingv1.RuleEvent{}, Tags: map[AppliedKey]int64{}}
				if h != nil {
					stale[k] = true // the row is gone
				}
			case h != nil && int64(h.AppliedSeq) == *seq:
				st = h
				if st.TagsRev != *rev {
					stale[k] = true
				}
				st.EvaluatedGen, st.TagsRev, st.Ctid, st.Dirty = *gen, *rev, id, false
			default:
				st = &ConvState{AppliedSeq: uint64(*seq), EvaluatedGen: *gen, TagsRev: *rev, Ctid: id, Stored: true,
					Facts: &taggingv1.RuleConversation{}, LastEvent: &taggingv1.RuleEvent{}, Tags: map[AppliedKey]int64{}}
				if err := proto.Unmarshal(factsB, st.Facts); err != nil {
					return fmt.Errorf("facts of %s/%s: %w", k.TenantID, k.ConversationID, err)
				}
				if err := proto.Unmarshal(lastB, st.LastEvent); err != nil {
					return fmt.Errorf("last event of %s/%s: %w", k.TenantID, k.ConversationID, err)
				}
				st.Size = len(factsB) + len(lastB)
				if n := len(st.Facts.Messages); n > 0 {
					st.checked = st.Facts.Messages[n-1] // decoding checked them
				}
				if h != nil {
					stale[k] = true
				}
			}
			out.States[k] = st
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: load states: %w", err)
		}
		return nil
	})
	readTags := func(b *pgx.Batch, keys []ConvKey) {
		ts, cs := splitKeys(keys)
		b.Queue(readTagsSQL, ts, cs).Query(func(rows pgx.Rows) error {
			var k ConvKey
			var a AppliedKey
			var v int64
			_, err := pgx.ForEachRow(rows, []any{&k.TenantID, &k.ConversationID, &a.RuleID, &a.Tag, &v}, func() error {
				if st := out.States[k]; st != nil {
					st.Tags[a] = v
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("store: load tags: %w", err)
			}
			return nil
		})
	}
	if len(unheld) > 0 {
		readTags(b, unheld)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return BatchRead{}, err
	}
	for _, k := range keys {
		if out.States[k] == nil {
			return BatchRead{}, fmt.Errorf("store: load states: no row for %s/%s", k.TenantID, k.ConversationID)
		}
	}
	if len(stale) > 0 {
		again := make([]ConvKey, 0, len(stale))
		for k := range stale {
			out.States[k].Tags = map[AppliedKey]int64{}
			again = append(again, k)
		}
		b := &pgx.Batch{}
		readTags(b, again)
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return BatchRead{}, err
		}
	}
	return out, nil
}

// saveStatesSQL writes states in one statement: $1-$7 are rows to update
// where ReadBatch found them (by ctid, checking the key), $8-$13 rows to
// insert or update by key. It returns how many rows it wrote.
const saveStatesSQL = `WITH upd AS (
	UPDATE tagging_conversations c
	SET applied_seq = u.s, evaluated_gen = u.g, facts = u.f, last_event = u.l, updated_at = now()
	FROM unnest($1::tid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bytea[], $7::bytea[]) AS u(id, t, c, s, g, f, l)
	WHERE c.ctid = u.id AND c.tenant_id = u.t AND c.conversation_id = u.c
	RETURNING 1
), ups AS (
	INSERT INTO tagging_conversations (tenant_id, conversation_id, applied_seq, evaluated_gen, facts, last_event, updated_at)
	SELECT t, c, s, g, f, l, now() FROM unnest($8::text[], $9::text[], $10::bigint[], $11::bigint[], $12::bytea[], $13::bytea[]) AS u(t, c, s, g, f, l)
	ON CONFLICT (tenant_id, conversation_id) DO UPDATE
	SET applied_seq = EXCLUDED.applied_seq, evaluated_gen = EXCLUDED.evaluated_gen, facts = EXCLUDED.facts,
	    last_event = EXCLUDED.last_event, updated_at = now()
	RETURNING 1
)
SELECT (SELECT count(*) FROM upd) + (SELECT count(*) FROM ups)`

// QueueSaveStates queues on b the statement that writes the dirty states
// (in key order) and records each one's encoded size. Nothing is queued
// when no state is dirty. A stored state is written where ReadBatch found
// its row in the same transaction (Ctid); should the row not be there (it
// cannot move while the batch holds the conversation's lock), the
// statement's result is an error.
func QueueSaveStates(b *pgx.Batch, states map[ConvKey]*ConvState) error {
	keys := make([]ConvKey, 0, len(states))
	for k, st := range states {
		if st.Dirty {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	slices.SortFunc(keys, compareKeys)
	// Every state is encoded into one buffer, sized after the states' last
	// known sizes; the rows are slices of it.
	est := 0
	for _, k := range keys {
		est += states[k].Size + states[k].Size/4 + 256
	}
	buf := make([]byte, 0, est)
	ends := make([][2]int, len(keys))
	for i, k := range keys {
		st := states[k]
		start := len(buf)
		var err error
		if buf, st.checked, err = appendFacts(buf, st.Facts, st.checked); err != nil {
			return fmt.Errorf("store: marshal facts: %w", err)
		}
		ends[i][0] = len(buf)
		if buf, err = (proto.MarshalOptions{}).MarshalAppend(buf, st.LastEvent); err != nil {
			return fmt.Errorf("store: marshal last event: %w", err)
		}
		ends[i][1] = len(buf)
		st.Size = len(buf) - start
	}
	type rows struct {
		ids          []pgtype.TID
		ts, cs       []string
		seqs, gens   []int64
		facts, lasts [][]byte
	}
	var upd, ups rows
	start := 0
	for i, k := range keys {
		st := states[k]
		r := &ups
		if st.Stored && st.Ctid.Valid {
			r = &upd
			r.ids = append(r.ids, st.Ctid)
		}
		r.ts, r.cs = append(r.ts, k.TenantID), append(r.cs, k.ConversationID)
		r.seqs, r.gens = append(r.seqs, int64(st.AppliedSeq)), append(r.gens, st.EvaluatedGen)
		r.facts = append(r.facts, buf[start:ends[i][0]:ends[i][0]])
		r.lasts = append(r.lasts, buf[ends[i][0]:ends[i][1]:ends[i][1]])
		start = ends[i][1]
	}
	for _, r := range []*rows{&upd, &ups} {
		if r.ts == nil {
			*r = rows{ids: []pgtype.TID{}, ts: []string{}, cs: []string{}, seqs: []int64{}, gens: []int64{}, facts: [][]byte{}, lasts: [][]byte{}}
		}
	}
	b.Queue(saveStatesSQL, upd.ids, upd.ts, upd.cs, upd.seqs, upd.gens, upd.facts, upd.lasts,
		ups.ts, ups.cs, ups.seqs, ups.gens, ups.facts, ups.lasts).QueryRow(func(row pgx.Row) error {
		var n int64
		if err := row.Scan(&n); err != nil {
			return fmt.Errorf("store: save states: %w", err)
		}
		if n != int64(len(keys)) {
			return fmt.Errorf("store: save states: %d of %d rows written (a row moved under the conversation lock)", n, len(keys))
		}
		return nil
	})
	return nil
}

// compareKeys orders keys by tenant, then conversation.
func compareKeys(a, b ConvKey) int {
	if c := strings.Compare(a.TenantID, b.TenantID); c != 0 {
		return c
	}
	return strings.Compare(a.ConversationID, b.ConversationID)
}

// bumpTagsRev moves the tags_rev of conversations whose tags a transaction
// other than live tagging's changes (see ConvState.TagsRev).
func bumpTagsRev(ctx context.Context, tx pgx.Tx, tenant string, convs []string) error {
	if len(convs) == 0 {
		return nil
	}
	convs = slices.Clone(convs)
	slices.Sort(convs)
	convs = slices.Compact(convs)
	if _, err := tx.Exec(ctx, `UPDATE tagging_conversations SET tags_rev = tags_rev + 1 WHERE tenant_id = $1 AND conversation_id = ANY($2)`, tenant, convs); err != nil {
		return fmt.Errorf("store: tags revision: %w", err)
	}
	return nil
}
