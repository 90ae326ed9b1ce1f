// Package sharelinks records the share links reporting mints (table
// reporting_share_links), so that each can be listed and revoked, and tells
// whether a link may still be used. Everything is scoped to one tenant.
package sharelinks

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/pgstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate creates or updates the table (goose version table
// goose_reporting_share_links).
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, _ := fs.Sub(migrations, "migrations")
	return pgstore.Migrate(ctx, pool, sub, "goose_reporting_share_links", log)
}

// Errors of the store.
var (
	ErrNotFound  = errors.New("sharelinks: no such link")
	ErrRevoked   = errors.New("sharelinks: link revoked")
	ErrBadCursor = errors.New("sharelinks: malformed page token")
)

// Link is one minted share link.
type Link struct {
	TenantID, ID, ConversationID, CreatedByKeyID string
	CreatedAt, ExpiresAt                         time.Time
	// RevokedAt is zero while the link is not revoked.
	RevokedAt time.Time
}

// Store reads and writes links.
type Store struct{ pool *pgxpool.Pool }

// New returns a store on pool.
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

const columns = `tenant_id, link_id, conversation_id, created_by_key_id, created_at, expires_at, revoked_at`

func scan(r pgx.Row) (Link, error) {
	var l Link
	var revoked *time.Time
	err := r.Scan(&l.TenantID, &l.ID, &l.ConversationID, &l.CreatedByKeyID, &l.CreatedAt, &l.ExpiresAt, &revoked)
	if revoked != nil {
		l.RevokedAt = revoked.UTC()
	}
	l.CreatedAt, l.ExpiresAt = l.CreatedAt.UTC(), l.ExpiresAt.UTC()
	return l, err
}

// Mint returns a link to the conversation for the key: the key's newest
// unrevoked link to it when that has more than half of ttl left (so viewing
// a conversation again does not mint link after link), else a new one
// expiring at now+ttl (whole seconds).
func (s *Store) Mint(ctx context.Context, tenant, conversation, keyID string, now time.Time, ttl time.Duration) (Link, error) {
	l, err := scan(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM reporting_share_links
		WHERE tenant_id = $1 AND conversation_id = $2 AND created_by_key_id = $3 AND revoked_at IS NULL AND expires_at > $4
		ORDER BY expires_at DESC LIMIT 1`, tenant, conversation, keyID, now.Add(ttl/2)))
	if err == nil {
		return l, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return Link{}, fmt.Errorf("sharelinks: mint: %w", err)
	}
	id := make([]byte, 8)
	if _, err := rand.Read(id); err != nil {
		return Link{}, err
	}
	l = Link{TenantID: tenant, ID: hex.EncodeToString(id), ConversationID: conversation, CreatedByKeyID: keyID,
		CreatedAt: now.UTC().Truncate(time.Microsecond), ExpiresAt: now.Add(ttl).UTC().Truncate(time.Second)}
	if _, err := s.pool.Exec(ctx, `INSERT INTO reporting_share_links (`+columns+`) VALUES ($1, $2, $3, $4, $5, $6, NULL)`,
		l.TenantID, l.ID, l.ConversationID, l.CreatedByKeyID, l.CreatedAt, l.ExpiresAt); err != nil {
		return Link{}, fmt.Errorf("sharelinks: mint: %w", err)
	}
	return l, nil
}

// Check returns the tenant's link, ErrNotFound when there is none and
// ErrRevoked when it was revoked (expiry is the token's to tell).
func (s *Store) Check(ctx context.Context, tenant, id string) (Link, error) {
	l, err := s.get(ctx, tenant, id)
	if err == nil && !l.RevokedAt.IsZero() {
		return l, ErrRevoked
	}
	return l, err
}

func (s *Store) get(ctx context.Context, tenant, id string) (Link, error) {
	l, err := scan(s.pool.QueryRow(ctx, `SELECT `+columns+` FROM reporting_share_links WHERE tenant_id = $1 AND link_id = $2`, tenant, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Link{}, ErrNotFound
	}
	if err != nil {
		return Link{}, fmt.Errorf("sharelinks: get: %w", err)
	}
	return l, nil
}

// Revoke revokes the tenant's link at now (a link revoked before keeps its
// first revocation time) and returns it.
func (s *Store) Revoke(ctx context.Context, tenant, id string, now time.Time) (Link, error) {
	if _, err := s.pool.Exec(ctx, `UPDATE reporting_share_links SET revoked_at = $3
		WHERE tenant_id = $1 AND link_id = $2 AND revoked_at IS NULL`, tenant, id, now.UTC()); err != nil {
		return Link{}, fmt.Errorf("sharelinks: revoke: %w", err)
	}
	return s.get(ctx, tenant, id)
}

// Cursor is a position in the newest-first order of List.
type Cursor struct {
	CreatedAt time.Time
	ID        string
}

// Encode renders the cursor as an opaque page token.
func (c Cursor) Encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte("l1:" + strconv.FormatInt(c.CreatedAt.UnixMicro(), 10) + ":" + c.ID))
}

// DecodeCursor parses a page token.
func DecodeCursor(token string) (Cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	parts := strings.SplitN(string(raw), ":", 3)
	if len(parts) != 3 || parts[0] != "l1" || parts[2] == "" {
		return Cursor{}, ErrBadCursor
	}
	us, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	return Cursor{CreatedAt: time.UnixMicro(us).UTC(), ID: parts[2]}, nil
}

// List returns up to limit of the tenant's links (of one conversation when
// conversation is not empty), newest first, after the cursor, and the
// cursor of the next page (nil on the last).
func (s *Store) List(ctx context.Context, tenant, conversation string, limit int, after *Cursor) ([]Link, *Cursor, error) {
	q := `SELECT ` + columns + ` FROM reporting_share_links WHERE tenant_id = $1 AND ($2 = '' OR conversation_id = $2)`
	args := []any{tenant, conversation, limit + 1}
	if after != nil {
		q += ` AND (created_at, link_id) < ($4, $5)`
		args = append(args, after.CreatedAt, after.ID)
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY created_at DESC, link_id DESC LIMIT $3`, args...)
	if err != nil {
		return nil, nil, fmt.Errorf("sharelinks: list: %w", err)
	}
	defer rows.Close()
	var out []Link
	for rows.Next() {
		l, err := scan(rows)
		if err != nil {
			return nil, nil, fmt.Errorf("sharelinks: list: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("sharelinks: list: %w", err)
	}
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		return out, &Cursor{CreatedAt: last.CreatedAt, ID: last.ID}, nil
	}
	return out, nil, nil
}
