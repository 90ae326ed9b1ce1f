package statestore

import (
	"sync"

	"github.com/parley-dev/parley/services/reporting/internal/convstate"
)

// DefaultCacheBytes bounds the memory a Store spends on remembering the
// fold states it loaded or saved last (as estimated by entryCost). 24 MiB
// hold the states of about 13,000 typical conversations (1.8 KB each in
// memory), more than are in flight at once under heavy load, and keep
// reporting well within its memory budget.
const DefaultCacheBytes = 24 << 20

// entryCost estimates the memory a cached state takes: the state itself
// and its list element and map entry.
func entryCost(st *convstate.State) int { return 160 + st.MemoryEstimate() }

// cache is a least-recently-used map from conversation to the fold state
// last loaded from or saved to PostgreSQL, with the last_seq it had there.
// A cached state is used only while PostgreSQL still holds that last_seq
// and the state itself has not moved past it (see Store.Load).
type cache struct {
	mu         sync.Mutex
	max, bytes int
	entries    map[Key]*entry
	head       entry // sentinel: head.next is the most recently used
}

type entry struct {
	key        Key
	state      *convstate.State
	seq        uint64
	cost       int
	prev, next *entry
}

func newCache(maxBytes int) *cache {
	c := &cache{max: maxBytes, entries: map[Key]*entry{}}
	c.head.prev, c.head.next = &c.head, &c.head
	return c
}

// get returns the cached state of k and the last_seq it was stored with.
func (c *cache) get(k Key) (*convstate.State, uint64, bool) {
	if c == nil {
		return nil, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[k]
	if e == nil {
		return nil, 0, false
	}
	c.unlink(e)
	c.pushFront(e)
	return e.state, e.seq, true
}

// put remembers st as stored in PostgreSQL with last_seq seq.
func (c *cache) put(k Key, st *convstate.State, seq uint64, cost int) {
	if c == nil || cost > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.entries[k]; e != nil {
		c.bytes += cost - e.cost
		e.state, e.seq, e.cost = st, seq, cost
		c.unlink(e)
		c.pushFront(e)
	} else {
		e := &entry{key: k, state: st, seq: seq, cost: cost}
		c.entries[k] = e
		c.bytes += cost
		c.pushFront(e)
	}
	for c.bytes > c.max {
		c.remove(c.head.prev)
	}
}

// forget drops the entries of keys.
func (c *cache) forget(keys []Key) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if e := c.entries[k]; e != nil {
			c.remove(e)
		}
	}
}

// reset drops every entry.
func (c *cache) reset() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.entries)
	c.head.prev, c.head.next = &c.head, &c.head
	c.bytes = 0
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

func (c *cache) remove(e *entry) {
	c.unlink(e)
	delete(c.entries, e.key)
	c.bytes -= e.cost
}

func (c *cache) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *cache) pushFront(e *entry) {
	e.prev, e.next = &c.head, c.head.next
	c.head.next.prev = e
	c.head.next = e
}
