// Package tenancy stores tenants, bots and API keys in PostgreSQL and
// authenticates API keys for the gRPC servers.
//
// An API key looks like <prefix><key id>_<secret>: pk_ for server keys, pub_
// for publishable (widget) keys, plat_ for platform keys (no tenant, operator
// scope). Only the SHA-256 of the secret is stored; the secret has 256 bits
// of entropy, so a fast hash is enough.
package tenancy

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/pgstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// ErrExists is returned when creating something that already exists.
var ErrExists = errors.New("tenancy: already exists")

// ErrNotFound is returned for an unknown tenant or key.
var ErrNotFound = errors.New("tenancy: not found")

// Migrate applies the tenancy schema.
func Migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	sub, _ := fs.Sub(migrations, "migrations")
	return pgstore.Migrate(ctx, pool, sub, "goose_tenancy", log)
}

// Store reads and writes tenancy data. It implements grpcx.Authenticator
// (see Authenticate and AuthConfig).
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	now  func() time.Time
	auth *authenticator
}

// Options configure a Store; the zero value is the documented defaults.
type Options struct {
	Auth AuthConfig
	// Log receives authentication warnings (nil: discarded).
	Log *slog.Logger
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// NewStore wraps a pool with default options.
func NewStore(pool *pgxpool.Pool) *Store { return NewStoreWith(pool, Options{}) }

// NewStoreWith wraps a pool.
func NewStoreWith(pool *pgxpool.Pool, o Options) *Store {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Store{pool: pool, log: o.Log, now: o.Now, auth: newAuthenticator(o.Auth)}
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

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

func isForeignKeyViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}
