// Package statestore keeps the projector's per-conversation fold state in
// PostgreSQL (table reporting_conversation_state), in convstate's binary
// encoding; rows saved as JSON by earlier versions are still read.
package statestore

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/pgstore"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or updates the tables (goose version table goose_reporting).
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, _ := fs.Sub(migrations, "migrations")
	return pgstore.Migrate(ctx, pool, sub, "goose_reporting", log)
}

// Key names a conversation.
type Key struct{ TenantID, ConversationID string }

// Table is the live fold-state table.
const Table = "reporting_conversation_state"

// querier is a pool or a transaction.
type querier interface {
	Execer
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Store reads and writes fold states.
type Store struct {
	pool  *pgxpool.Pool
	q     querier // pool, or the transaction of In
	table string
}

// New returns a store on pool using the live table.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool, q: pool, table: Table} }

// WithTable returns a store on another table of the same shape (a rebuild's).
func (s *Store) WithTable(table string) *Store { return &Store{pool: s.pool, q: s.q, table: table} }

// In returns the store with its loads and saves run in tx.
func (s *Store) In(tx pgx.Tx) *Store { return &Store{pool: s.pool, q: tx, table: s.table} }

// Load returns the stored states of keys, in their order; a conversation
// without a state gets nil.
func (s *Store) Load(ctx context.Context, keys []Key) ([]*convstate.State, error) {
	tenants := make([]string, len(keys))
	convs := make([]string, len(keys))
	for i, k := range keys {
		tenants[i], convs[i] = k.TenantID, k.ConversationID
	}
	rows, err := s.q.Query(ctx, `SELECT k.i, s.state_bin, CASE WHEN s.state_bin IS NULL THEN s.state END
		FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(tenant_id, conversation_id, i)
		JOIN `+s.table+` s ON s.tenant_id = k.tenant_id AND s.conversation_id = k.conversation_id`, tenants, convs)
	if err != nil {
		return nil, fmt.Errorf("statestore: load: %w", err)
	}
	defer rows.Close()
	out := make([]*convstate.State, len(keys))
	for rows.Next() {
		var (
			i        int64
			bin, doc []byte
		)
		if err := rows.Scan(&i, &bin, &doc); err != nil {
			return nil, fmt.Errorf("statestore: load: %w", err)
		}
		if i < 1 || int(i) > len(keys) {
			return nil, fmt.Errorf("statestore: load: unexpected key index %d", i)
		}
		i--
		st := &convstate.State{}
		if bin != nil {
			err = st.UnmarshalBinary(bin)
		} else {
			err = json.Unmarshal(doc, st) // saved before the binary encoding
		}
		if err != nil {
			// A stored state that does not decode is a data error: retrying
			// cannot fix it.
			return nil, eventbus.Permanent(fmt.Errorf("statestore: decode %s/%s: %w", keys[i].TenantID, keys[i].ConversationID, err))
		}
		out[i] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("statestore: load: %w", err)
	}
	return out, nil
}

// Execer is a pool or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Save upserts states. A stored state with a higher last_seq is kept (a
// slower, older writer never overwrites a newer state).
func (s *Store) Save(ctx context.Context, states []*convstate.State) error {
	return s.SaveIn(ctx, s.q, states)
}

// SaveIn is Save in q, e.g. the transaction that commits a partition's
// position with the states.
func (s *Store) SaveIn(ctx context.Context, q Execer, states []*convstate.State) error {
	if len(states) == 0 {
		return nil
	}
	tenants := make([]string, len(states))
	convs := make([]string, len(states))
	seqs := make([]int64, len(states))
	docs := make([][]byte, len(states))
	// One buffer for all encodings; docs are slices of it.
	buf := make([]byte, 0, 1024*len(states))
	for i, st := range states {
		n := len(buf)
		var err error
		if buf, err = st.AppendBinary(buf); err != nil {
			return eventbus.Permanent(fmt.Errorf("statestore: encode: %w", err))
		}
		tenants[i], convs[i], seqs[i] = st.TenantID, st.ConversationID, int64(st.LastSeq)
		docs[i] = buf[n:len(buf):len(buf)]
	}
	_, err := q.Exec(ctx, `INSERT INTO `+s.table+` AS t (tenant_id, conversation_id, last_seq, state_bin)
		SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bytea[])
		ON CONFLICT (tenant_id, conversation_id) DO UPDATE
		  SET last_seq = excluded.last_seq, state_bin = excluded.state_bin, state = NULL
		  WHERE t.last_seq < excluded.last_seq`, tenants, convs, seqs, docs)
	if err != nil {
		return fmt.Errorf("statestore: save: %w", err)
	}
	return nil
}

// Tx runs fn in a transaction of the store's database.
func (s *Store) Tx(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, fn)
}

// ErrSwapped means the live projection tables were swapped by a rebuild
// since the projector read their generation: what it wrote went to tables
// that are no longer live, so it must project again (transient).
var ErrSwapped = errors.New("statestore: projection tables swapped by a rebuild; projecting again")

// Generation returns the live projection tables' generation.
func (s *Store) Generation(ctx context.Context) (int64, error) {
	var g int64
	if err := s.pool.QueryRow(ctx, `SELECT generation FROM reporting_projection WHERE id = 1`).Scan(&g); err != nil {
		return 0, fmt.Errorf("statestore: generation: %w", err)
	}
	return g, nil
}

// CheckGeneration fails with ErrSwapped unless the generation is still g,
// and holds the row FOR SHARE until tx ends: a rebuild cannot swap the
// tables (it locks the row FOR UPDATE) while tx commits, and tx waits for
// a swap in progress.
func CheckGeneration(ctx context.Context, tx pgx.Tx, g int64) error {
	var now int64
	if err := tx.QueryRow(ctx, `SELECT generation FROM reporting_projection WHERE id = 1 FOR SHARE`).Scan(&now); err != nil {
		return fmt.Errorf("statestore: generation: %w", err)
	}
	if now != g {
		return ErrSwapped
	}
	return nil
}

// LockGeneration locks the generation row FOR UPDATE in tx, so that no
// projector commits until tx ends, and returns the current generation.
func LockGeneration(ctx context.Context, tx pgx.Tx) (int64, error) {
	var g int64
	if err := tx.QueryRow(ctx, `SELECT generation FROM reporting_projection WHERE id = 1 FOR UPDATE`).Scan(&g); err != nil {
		return 0, fmt.Errorf("statestore: lock generation: %w", err)
	}
	return g, nil
}

// BumpGeneration increments the generation in tx (the rebuild's swap).
func BumpGeneration(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `UPDATE reporting_projection SET generation = generation + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("statestore: bump generation: %w", err)
	}
	return nil
}

// Secret returns the named secret, creating a random one of 32 bytes on
// first use. Every replica gets the same value.
func (s *Store) Secret(ctx context.Context, name string) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO reporting_settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, fresh); err != nil {
		return nil, fmt.Errorf("statestore: secret: %w", err)
	}
	var v []byte
	if err := s.pool.QueryRow(ctx, `SELECT value FROM reporting_settings WHERE name = $1`, name).Scan(&v); err != nil {
		return nil, fmt.Errorf("statestore: secret: %w", err)
	}
	return v, nil
}
