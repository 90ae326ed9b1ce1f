package mask

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"sync"
	"time"
)

// outageRetry is how long an expired entry is used, after the source
// failed, before the source is asked again.
const outageRetry = 5 * time.Second

// Source loads a tenant's stored rules.
type Source interface {
	MaskingRules(ctx context.Context, tenantID string) ([]Rule, error)
}

// Cache keeps each tenant's compiled rules for TTL, for at most max tenants
// (when full, the entry loaded longest ago is dropped). When the source
// fails, an expired entry is used rather than none (the source is asked
// again after outageRetry); with no entry at all the error is returned
// (events are not stored unmasked).
type Cache struct {
	src    Source
	secret []byte
	ttl    time.Duration
	max    int
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]cacheEntry
}

type cacheEntry struct {
	set    *Set
	loaded time.Time
}

// NewCache returns a cache over src; secret derives each tenant's hash key.
func NewCache(src Source, secret []byte, ttl time.Duration, max int, now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	if max <= 0 {
		max = 1
	}
	return &Cache{src: src, secret: secret, ttl: ttl, max: max, now: now, entries: map[string]cacheEntry{}}
}

// TenantKey is a tenant's HMAC key derived from secret with label (so the
// keys of different uses and tenants are independent).
func TenantKey(secret []byte, label, tenantID string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write([]byte(tenantID))
	return m.Sum(nil)
}

// Rules returns the tenant's compiled rules.
func (c *Cache) Rules(ctx context.Context, tenantID string) (*Set, error) {
	now := c.now()
	c.mu.Lock()
	e, ok := c.entries[tenantID]
	c.mu.Unlock()
	if ok && now.Sub(e.loaded) < c.ttl {
		return e.set, nil
	}
	set, err := c.Load(ctx, tenantID)
	if err != nil {
		if ok {
			// Keep serving the expired rules and ask the source again only
			// after outageRetry, not on every request.
			c.mu.Lock()
			c.entries[tenantID] = cacheEntry{set: e.set, loaded: now.Add(min(outageRetry, c.ttl) - c.ttl)}
			c.mu.Unlock()
			return e.set, nil
		}
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, present := c.entries[tenantID]; !present && len(c.entries) >= c.max {
		oldest, at := "", now
		for t, e := range c.entries {
			if !e.loaded.After(at) {
				oldest, at = t, e.loaded
			}
		}
		delete(c.entries, oldest)
	}
	c.entries[tenantID] = cacheEntry{set: set, loaded: now}
	return set, nil
}

// Load reads and compiles the tenant's rules, bypassing the cache.
func (c *Cache) Load(ctx context.Context, tenantID string) (*Set, error) {
	rules, err := c.src.MaskingRules(ctx, tenantID)
	if err != nil {
		return nil, err
	}
	return Compile(rules, c.HashKey(tenantID))
}

// HashKey is the tenant's key of the hash action.
func (c *Cache) HashKey(tenantID string) []byte {
	return TenantKey(c.secret, "parley-mask-hash", tenantID)
}

// Forget drops the tenant's entry (after its rules changed here).
func (c *Cache) Forget(tenantID string) {
	c.mu.Lock()
	delete(c.entries, tenantID)
	c.mu.Unlock()
}
