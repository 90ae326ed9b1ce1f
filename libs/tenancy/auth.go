package tenancy

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/parley-dev/parley/libs/grpcx"
)

// AuthConfig tunes API-key authentication. Zero fields take the defaults.
type AuthConfig struct {
	// CacheTTL is how long a result is reused: a revoked key stops working
	// within it while the database answers.
	CacheTTL time.Duration `env:"PARLEY_AUTH_CACHE_TTL" envDefault:"30s"`
	// OutageGrace is how long after its last successful check a key keeps
	// working while the database cannot be reached.
	OutageGrace time.Duration `env:"PARLEY_AUTH_OUTAGE_GRACE" envDefault:"15m"`
	// LookupTimeout bounds one key lookup in the database.
	LookupTimeout time.Duration `env:"PARLEY_AUTH_LOOKUP_TIMEOUT" envDefault:"2s"`
	// CacheSize bounds the valid keys remembered; NegativeCacheSize the
	// refused ones (kept apart, so refused keys never evict valid ones).
	CacheSize         int `env:"PARLEY_AUTH_CACHE_SIZE" envDefault:"100000"`
	NegativeCacheSize int `env:"PARLEY_AUTH_NEGATIVE_CACHE_SIZE" envDefault:"10000"`
	// FailureLimit failed authentications from one peer address within
	// FailureWindow get that peer ResourceExhausted until the window ends.
	FailureLimit  int           `env:"PARLEY_AUTH_FAILURE_LIMIT" envDefault:"20"`
	FailureWindow time.Duration `env:"PARLEY_AUTH_FAILURE_WINDOW" envDefault:"1m"`
}

// CacheTTL is the default of AuthConfig.CacheTTL.
const CacheTTL = 30 * time.Second

// maxThrottledPeers bounds the peers whose failures are counted.
const maxThrottledPeers = 10000

// dbRetryInterval is how long after a failed lookup keys within their
// outage grace are served without asking the database again.
const dbRetryInterval = time.Second

func (c AuthConfig) withDefaults() AuthConfig {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.CacheTTL, CacheTTL)
	def(&c.OutageGrace, 15*time.Minute)
	def(&c.LookupTimeout, 2*time.Second)
	def(&c.FailureWindow, time.Minute)
	defInt(&c.CacheSize, 100000)
	defInt(&c.NegativeCacheSize, 10000)
	defInt(&c.FailureLimit, 20)
	return c
}

// authenticator holds the Store's authentication state.
type authenticator struct {
	cfg      AuthConfig
	cache    *keyCache
	throttle *failureThrottle
	// lastDBFailure is the UnixNano of the latest failed lookup.
	lastDBFailure atomic.Int64
}

func newAuthenticator(cfg AuthConfig) *authenticator {
	cfg = cfg.withDefaults()
	return &authenticator{
		cfg:      cfg,
		cache:    newKeyCache(cfg.CacheSize, cfg.NegativeCacheSize),
		throttle: newFailureThrottle(cfg.FailureLimit, cfg.FailureWindow, maxThrottledPeers),
	}
}

// Authenticate resolves a key to its principal (grpcx.Authenticator).
//
// A key the database confirmed within CacheTTL is answered from memory. A
// peer with too many recent failures gets ResourceExhausted without a
// database lookup. When the database cannot be reached, keys it confirmed
// within OutageGrace keep working; others get an error (the server answers
// Unavailable).
func (s *Store) Authenticate(ctx context.Context, key string) (grpcx.Principal, error) {
	a, now := s.auth, s.now()
	peer := grpcx.PeerAddress(ctx)
	kind, keyID, secret, ok := parseKey(key)
	if !ok {
		return a.refuse(peer, now)
	}
	sum := sha256.Sum256([]byte(secret))
	ck := kind + ":" + keyID + ":" + hex.EncodeToString(sum[:])
	if p, ok := a.cache.validSince(ck, now.Add(-a.cfg.CacheTTL)); ok {
		return p, nil
	}
	if left, blocked := a.throttle.blocked(peer, now); blocked {
		return grpcx.Principal{}, grpcx.ResourceExhausted(
			fmt.Sprintf("too many failed authentications from %s; retry in %s", peer, left.Round(time.Second)), left)
	}
	if a.cache.isRefused(ck, now) {
		return a.refuse(peer, now)
	}
	if since := time.Unix(0, a.lastDBFailure.Load()); now.Sub(since) < dbRetryInterval {
		if p, ok := a.cache.validSince(ck, now.Add(-a.cfg.OutageGrace)); ok {
			return p, nil
		}
	}
	p, hash, revoked, err := s.lookup(ctx, keyID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		a.lastDBFailure.Store(now.UnixNano())
		if p, ok := a.cache.validSince(ck, now.Add(-a.cfg.OutageGrace)); ok {
			s.log.WarnContext(ctx, "authenticating from cache: key database unreachable", "key_id", keyID, "err", err)
			return p, nil
		}
		// Not cached: the database may recover.
		return grpcx.Principal{}, fmt.Errorf("tenancy: look up key %s: %w", keyID, err)
	case subtle.ConstantTimeCompare(hash, sum[:]) == 1 && !revoked && kindOf(p) == kind:
		a.cache.putValid(ck, p, now)
		return p, nil
	}
	a.cache.putRefused(ck, now.Add(a.cfg.CacheTTL))
	return a.refuse(peer, now)
}

func (a *authenticator) refuse(peer string, now time.Time) (grpcx.Principal, error) {
	a.throttle.fail(peer, now)
	return grpcx.Principal{}, grpcx.ErrInvalidKey
}

// kindOf is the kind a key's prefix must claim for p.
func kindOf(p grpcx.Principal) string {
	switch {
	case p.Platform():
		return kindPlatform
	case p.Publishable():
		return grpcx.KindPublishable
	}
	return grpcx.KindServer
}

func (s *Store) lookup(ctx context.Context, keyID string) (p grpcx.Principal, hash []byte, revoked bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.auth.cfg.LookupTimeout)
	defer cancel()
	var (
		tenant    *string
		revokedAt *time.Time
	)
	p.KeyID = keyID
	err = s.pool.QueryRow(ctx, `SELECT tenant_id, secret_sha256, scopes, kind, allowed_origins, revoked_at FROM api_keys WHERE key_id = $1`, keyID).
		Scan(&tenant, &hash, &p.Scopes, &p.Kind, &p.AllowedOrigins, &revokedAt)
	if tenant != nil {
		p.TenantID = *tenant
	}
	return p, hash, revokedAt != nil, err
}
