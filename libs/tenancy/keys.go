package tenancy

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/grpcx"
)

// Key prefixes tell the kinds apart: pk_ server keys (and every key made
// before kinds existed), pub_ publishable widget keys, plat_ platform keys.
const (
	prefixServer      = "pk_"
	prefixPublishable = "pub_"
	prefixPlatform    = "plat_"
)

// TenantScopes are the scopes a tenant's server key may hold.
var TenantScopes = []string{grpcx.ScopeIngest, grpcx.ScopeRead, grpcx.ScopeRules, grpcx.ScopeAdmin}

// KeySpec describes a key to create.
type KeySpec struct {
	// TenantID owns the key; empty makes a platform key (operator scope only).
	TenantID string
	// Name says what the key is for.
	Name string
	// Kind is grpcx.KindServer (default) or grpcx.KindPublishable.
	Kind   string
	Scopes []string
	// AllowedOrigins are required for a publishable key (scheme://host[:port]).
	AllowedOrigins []string
}

// Key is a stored key, without its secret.
type Key struct {
	KeyID          string
	TenantID       string // empty for a platform key
	Name           string
	Kind           string
	Scopes         []string
	AllowedOrigins []string
	CreatedAt      time.Time
	RevokedAt      *time.Time
}

// CreateAPIKey creates a server key of a tenant and returns its plaintext,
// which is not stored and cannot be shown again.
func (s *Store) CreateAPIKey(ctx context.Context, tenantID, name string, scopes []string) (key, keyID string, err error) {
	if tenantID == "" {
		return "", "", errors.New("tenancy: a tenant key needs a tenant")
	}
	return s.CreateKey(ctx, KeySpec{TenantID: tenantID, Name: name, Scopes: scopes})
}

// CreateKey creates a key as spec describes and returns its plaintext (shown
// once) and id.
func (s *Store) CreateKey(ctx context.Context, spec KeySpec) (key, keyID string, err error) {
	prefix, err := spec.validate()
	if err != nil {
		return "", "", err
	}
	idb, secret := make([]byte, 8), make([]byte, 32)
	_, _ = rand.Read(idb) // crypto/rand.Read never fails
	_, _ = rand.Read(secret)
	keyID = hex.EncodeToString(idb)
	secretHex := hex.EncodeToString(secret)
	sum := sha256.Sum256([]byte(secretHex))
	var tenant *string
	if spec.TenantID != "" {
		tenant = &spec.TenantID
	}
	origins := spec.AllowedOrigins
	if origins == nil {
		origins = []string{}
	}
	_, err = s.pool.Exec(ctx, `INSERT INTO api_keys (key_id, tenant_id, name, secret_sha256, scopes, kind, allowed_origins)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, keyID, tenant, spec.Name, sum[:], spec.Scopes, spec.Kind, origins)
	if isForeignKeyViolation(err) {
		return "", "", fmt.Errorf("%w: tenant %s", ErrNotFound, spec.TenantID)
	}
	if err != nil {
		return "", "", err
	}
	return prefix + keyID + "_" + secretHex, keyID, nil
}

// validate checks spec, fills its defaults and returns the key's prefix.
func (spec *KeySpec) validate() (string, error) {
	if spec.Kind == "" {
		spec.Kind = grpcx.KindServer
	}
	if len(spec.Scopes) == 0 {
		return "", errors.New("tenancy: a key needs at least one scope")
	}
	if spec.TenantID == "" {
		if spec.Kind != grpcx.KindServer || !slices.Equal(spec.Scopes, []string{grpcx.ScopeOperator}) {
			return "", fmt.Errorf("tenancy: a platform key (no tenant) is a server key with exactly the %q scope", grpcx.ScopeOperator)
		}
		if len(spec.AllowedOrigins) > 0 {
			return "", errors.New("tenancy: only publishable keys have allowed origins")
		}
		return prefixPlatform, nil
	}
	for _, sc := range spec.Scopes {
		if sc == grpcx.ScopeOperator {
			return "", fmt.Errorf("tenancy: the %q scope is for platform keys only (create one without a tenant)", grpcx.ScopeOperator)
		}
		if !slices.Contains(TenantScopes, sc) {
			return "", fmt.Errorf("tenancy: unknown scope %q (valid: %s)", sc, strings.Join(TenantScopes, ", "))
		}
	}
	switch spec.Kind {
	case grpcx.KindServer:
		if len(spec.AllowedOrigins) > 0 {
			return "", errors.New("tenancy: only publishable keys have allowed origins")
		}
		return prefixServer, nil
	case grpcx.KindPublishable:
		if !slices.Equal(spec.Scopes, []string{grpcx.ScopeIngest}) {
			return "", fmt.Errorf("tenancy: a publishable key holds only the %q scope", grpcx.ScopeIngest)
		}
		if len(spec.AllowedOrigins) == 0 {
			return "", errors.New("tenancy: a publishable key needs at least one allowed origin")
		}
		for i, o := range spec.AllowedOrigins {
			norm, err := ValidateOrigin(o)
			if err != nil {
				return "", err
			}
			spec.AllowedOrigins[i] = norm
		}
		return prefixPublishable, nil
	default:
		return "", fmt.Errorf("tenancy: unknown key kind %q (valid: %s, %s)", spec.Kind, grpcx.KindServer, grpcx.KindPublishable)
	}
}

// ValidateOrigin checks that o is a browser origin, scheme://host[:port] with
// scheme http or https and nothing else, and returns it in lower case (the
// form browsers send in the Origin header).
func ValidateOrigin(o string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("tenancy: origin %q: %s (want scheme://host[:port], e.g. https://shop.example)", o, why)
	}
	u, err := url.Parse(o)
	if err != nil {
		return bad("not a URL")
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return bad("scheme must be http or https")
	case u.Host == "" || u.Hostname() == "" || u.Opaque != "":
		return bad("no host")
	case u.User != nil:
		return bad("user info is not part of an origin")
	case u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery || strings.HasSuffix(o, "#"):
		return bad("path, query and fragment are not part of an origin")
	case strings.Contains(u.Hostname(), "*"):
		return bad("wildcards are not allowed")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return bad("bad port")
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return bad("empty port")
	}
	return strings.ToLower(u.Scheme + "://" + u.Host), nil
}

// KeyFilter selects keys to list: one tenant's, the platform keys, or (zero
// value) every key.
type KeyFilter struct {
	TenantID string
	Platform bool
	// Revoked includes revoked keys.
	Revoked bool
}

// ListKeys returns keys (never their secrets), oldest first.
func (s *Store) ListKeys(ctx context.Context, f KeyFilter) ([]Key, error) {
	rows, err := s.pool.Query(ctx, `SELECT key_id, coalesce(tenant_id, ''), name, kind, scopes, allowed_origins, created_at, revoked_at
		FROM api_keys
		WHERE ($1 = '' OR tenant_id = $1) AND (NOT $2 OR tenant_id IS NULL) AND ($3 OR revoked_at IS NULL)
		ORDER BY created_at, key_id`, f.TenantID, f.Platform, f.Revoked)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Key, error) {
		var k Key
		err := r.Scan(&k.KeyID, &k.TenantID, &k.Name, &k.Kind, &k.Scopes, &k.AllowedOrigins, &k.CreatedAt, &k.RevokedAt)
		return k, err
	})
}

// RevokeAPIKey revokes a key of a tenant; an empty tenantID names a platform
// key.
func (s *Store) RevokeAPIKey(ctx context.Context, tenantID, keyID string) error {
	tag, err := s.pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now()
		WHERE tenant_id IS NOT DISTINCT FROM nullif($1, '') AND key_id = $2 AND revoked_at IS NULL`, tenantID, keyID)
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
	_, keyID, secret, ok = parseKey(key)
	return keyID, secret, ok
}

// parseKey also returns the kind the prefix claims ("platform" for plat_).
func parseKey(key string) (kind, keyID, secret string, ok bool) {
	var rest string
	for _, p := range []struct{ prefix, kind string }{
		{prefixServer, grpcx.KindServer}, {prefixPublishable, grpcx.KindPublishable}, {prefixPlatform, kindPlatform},
	} {
		if r, found := strings.CutPrefix(key, p.prefix); found {
			kind, rest = p.kind, r
			break
		}
	}
	if kind == "" {
		return "", "", "", false
	}
	keyID, secret, ok = strings.Cut(rest, "_")
	if !ok || len(keyID) != 16 || len(secret) != 64 {
		return "", "", "", false
	}
	return kind, keyID, secret, true
}

// kindPlatform is what a plat_ prefix claims: a server key of no tenant.
const kindPlatform = "platform"
