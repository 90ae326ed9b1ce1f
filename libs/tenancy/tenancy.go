// Package tenancy stores tenants, bots and API keys in PostgreSQL and
// authenticates API keys for the gRPC servers.
//
// An API key looks like pk_<key id>_<secret>. Only the SHA-256 of the secret
// is stored; the secret has 256 bits of entropy, so a fast hash is enough.
package tenancy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/pgstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// ErrExists is returned when creating something that already exists.
var ErrExists = errors.New("tenancy: already exists")

// ErrNotFound is returned for an unknown tenant or key.
var ErrNotFound = errors.New("tenancy: not found")

// ValidScopes are the scopes a key may hold.
var ValidScopes = []string{grpcx.ScopeIngest, grpcx.ScopeRead, grpcx.ScopeAdmin}

// Migrate applies the tenancy schema.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, _ := fs.Sub(migrations, "migrations")
	return pgstore.Migrate(ctx, pool, sub, "goose_tenancy", log)
}

// Store reads and writes tenancy data. It implements grpcx.Authenticator with
// a short-lived cache: a revoked key stops working within CacheTTL.
type Store struct {
	pool     *pgxpool.Pool
	cacheTTL time.Duration
	now      func() time.Time

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	p       grpcx.Principal
	err     error
	expires time.Time
}

// CacheTTL is how long an authentication result is reused.
const CacheTTL = 30 * time.Second

// NewStore wraps a pool.
func NewStore(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool, cacheTTL: CacheTTL, now: time.Now, cache: map[string]cached{}}
}

// CreateTenant adds a tenant.
func (s *Store) CreateTenant(ctx context.Context, tenantID, name string) error {
	if !eventbus.ValidTenantID(tenantID) {
		return fmt.Errorf("tenancy: tenant id %q must match [A-Za-z0-9_-]{1,64}", tenantID)
	}
	if name == "" {
		name = tenantID
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO tenants (tenant_id, name) VALUES ($1, $2)`, tenantID, name)
	if isUniqueViolation(err) {
		return ErrExists
	}
	return err
}

// TenantExists reports whether a tenant exists.
func (s *Store) TenantExists(ctx context.Context, tenantID string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1)`, tenantID).Scan(&ok)
	return ok, err
}

// TimeZone returns the tenant's IANA time zone ("UTC" when unset or the
// tenant is unknown).
func (s *Store) TimeZone(ctx context.Context, tenantID string) (string, error) {
	var tz *string
	err := s.pool.QueryRow(ctx, `SELECT time_zone FROM tenants WHERE tenant_id = $1`, tenantID).Scan(&tz)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (tz == nil || *tz == "")) {
		return "UTC", nil
	}
	if err != nil {
		return "", err
	}
	return *tz, nil
}

// CreateBot adds a bot to a tenant.
func (s *Store) CreateBot(ctx context.Context, tenantID, botID, name string) error {
	if name == "" {
		name = botID
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO bots (tenant_id, bot_id, name) VALUES ($1, $2, $3)`, tenantID, botID, name)
	if isUniqueViolation(err) {
		return ErrExists
	}
	if isForeignKeyViolation(err) {
		return fmt.Errorf("%w: tenant %s", ErrNotFound, tenantID)
	}
	return err
}

// CreateAPIKey creates a key for a tenant and returns its plaintext, which is
// not stored and cannot be shown again.
func (s *Store) CreateAPIKey(ctx context.Context, tenantID, name string, scopes []string) (key, keyID string, err error) {
	if len(scopes) == 0 {
		return "", "", errors.New("tenancy: a key needs at least one scope")
	}
	for _, sc := range scopes {
		if !slices.Contains(ValidScopes, sc) {
			return "", "", fmt.Errorf("tenancy: unknown scope %q (valid: %s)", sc, strings.Join(ValidScopes, ", "))
		}
	}
	idb, secret := make([]byte, 8), make([]byte, 32)
	if _, err := rand.Read(idb); err != nil {
		return "", "", err
	}
	if _, err := rand.Read(secret); err != nil {
		return "", "", err
	}
	keyID = hex.EncodeToString(idb)
	secretHex := hex.EncodeToString(secret)
	sum := sha256.Sum256([]byte(secretHex))
	_, err = s.pool.Exec(ctx, `INSERT INTO api_keys (key_id, tenant_id, name, secret_sha256, scopes) VALUES ($1, $2, $3, $4, $5)`,
		keyID, tenantID, name, sum[:], scopes)
	if isForeignKeyViolation(err) {
		return "", "", fmt.Errorf("%w: tenant %s", ErrNotFound, tenantID)
	}
	if err != nil {
		return "", "", err
	}
	return "pk_" + keyID + "_" + secretHex, keyID, nil
}

// RevokeAPIKey revokes a key of a tenant.
func (s *Store) RevokeAPIKey(ctx context.Context, tenantID, keyID string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE tenant_id = $1 AND key_id = $2 AND revoked_at IS NULL`, tenantID, keyID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// ParseKey splits a key into its id and secret.
func ParseKey(key string) (keyID, secret string, ok bool) {
	rest, ok := strings.CutPrefix(key, "pk_")
	if !ok {
		return "", "", false
	}
	keyID, secret, ok = strings.Cut(rest, "_")
	if !ok || len(keyID) != 16 || len(secret) != 64 {
		return "", "", false
	}
	return keyID, secret, true
}

// Authenticate resolves a key to its tenant and scopes.
func (s *Store) Authenticate(ctx context.Context, key string) (grpcx.Principal, error) {
	keyID, secret, ok := ParseKey(key)
	if !ok {
		return grpcx.Principal{}, grpcx.ErrInvalidKey
	}
	sum := sha256.Sum256([]byte(secret))
	cacheKey := keyID + ":" + hex.EncodeToString(sum[:])
	now := s.now()
	s.mu.Lock()
	c, hit := s.cache[cacheKey]
	s.mu.Unlock()
	if hit && now.Before(c.expires) {
		return c.p, c.err
	}

	var (
		tenant  string
		hash    []byte
		scopes  []string
		revoked *time.Time
	)
	err := s.pool.QueryRow(ctx, `SELECT tenant_id, secret_sha256, scopes, revoked_at FROM api_keys WHERE key_id = $1`, keyID).
		Scan(&tenant, &hash, &scopes, &revoked)
	var p grpcx.Principal
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		err = grpcx.ErrInvalidKey
	case err != nil:
		return grpcx.Principal{}, err // not cached: the database may recover
	case subtle.ConstantTimeCompare(hash, sum[:]) != 1 || revoked != nil:
		err = grpcx.ErrInvalidKey
	default:
		p = grpcx.Principal{TenantID: tenant, KeyID: keyID, Scopes: scopes}
	}
	s.mu.Lock()
	if len(s.cache) > 10000 {
		clear(s.cache)
	}
	s.cache[cacheKey] = cached{p: p, err: err, expires: now.Add(s.cacheTTL)}
	s.mu.Unlock()
	return p, err
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func isForeignKeyViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}
