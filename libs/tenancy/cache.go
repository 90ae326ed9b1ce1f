package tenancy

import (
	"sync"
	"time"

	"github.com/parley-dev/parley/libs/grpcx"
)

// keyCache remembers authentication results. Valid keys and refused keys
// live in separate bounded structures, so a flood of random keys can only
// evict other refused keys, never a valid one.
type keyCache struct {
	mu sync.Mutex
	// valid holds keys the database confirmed, with when it last did.
	valid    map[string]validEntry
	maxValid int
	// refused holds keys the database refused, oldest first in order.
	refused    map[string]time.Time // expiry
	order      []string             // FIFO ring of refused's keys
	next       int
	maxRefused int
}

type validEntry struct {
	p        grpcx.Principal
	verified time.Time
}

func newKeyCache(maxValid, maxRefused int) *keyCache {
	return &keyCache{
		valid: map[string]validEntry{}, maxValid: maxValid,
		refused: map[string]time.Time{}, order: make([]string, maxRefused), maxRefused: maxRefused,
	}
}

// valid returns the principal of a key verified at or after since.
func (c *keyCache) validSince(k string, since time.Time) (grpcx.Principal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.valid[k]
	if !ok || e.verified.Before(since) {
		return grpcx.Principal{}, false
	}
	return e.p, true
}

// isRefused reports a key refused whose refusal has not expired.
func (c *keyCache) isRefused(k string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.refused[k]
	return ok && now.Before(exp)
}

// putValid records a key the database just confirmed. When full, it drops
// the entry verified longest ago (keys past the outage grace first; every
// key of the bound is a real key, so this only happens when there are more
// real keys than the bound).
func (c *keyCache) putValid(k string, p grpcx.Principal, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.refused, k)
	if _, ok := c.valid[k]; !ok && len(c.valid) >= c.maxValid {
		oldest, first := "", true
		var at time.Time
		for key, e := range c.valid {
			if first || e.verified.Before(at) {
				oldest, at, first = key, e.verified, false
			}
		}
		delete(c.valid, oldest)
	}
	c.valid[k] = validEntry{p: p, verified: now}
}

// putRefused records a key the database refused until expires; it forgets
// any earlier confirmation (a revoked key). When full, the oldest refusal
// is dropped.
func (c *keyCache) putRefused(k string, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.valid, k)
	if _, ok := c.refused[k]; !ok {
		if old := c.order[c.next]; old != "" {
			delete(c.refused, old)
		}
		c.order[c.next] = k
		c.next = (c.next + 1) % c.maxRefused
	}
	c.refused[k] = expires
}

// sizes returns how many valid and refused keys are held (tests).
func (c *keyCache) sizes() (valid, refused int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.valid), len(c.refused)
}
