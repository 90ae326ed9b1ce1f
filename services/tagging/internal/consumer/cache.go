package consumer

import (
	"sync"

	"github.com/parley-dev/parley/services/tagging/internal/store"
)

// DefaultCacheBytes bounds the memory of the conversation states live
// tagging keeps between batches, unless configured otherwise: about 3,000
// conversations of 10 to 20 messages, more than the full-suite load test
// has in flight. With the garbage collector's headroom it adds at most
// about 32 MB to the service's resident memory.
const DefaultCacheBytes = 16 << 20

// stateCache keeps the states of recently touched conversations between
// batches, least recently used first out, within a bound on their estimated
// memory. It is write-through: every state in it is the one the last
// committed batch stored. A batch takes the states it needs out of it and
// puts them back only after its transaction committed, so a failed or
// retried transaction leaves nothing behind, and a state is used only after
// ReadBatch confirmed under the conversation's lock that the stored row is
// still at the same applied_seq.
//
// Each state is kept under the partition whose batch stored it: a
// partition this replica no longer owns, or took again under a new lease,
// is dropped whole (dropPartition, retain), so the cache only holds
// conversations of partitions this replica owns.
type stateCache struct {
	mu       sync.Mutex
	maxBytes int64
	bytes    int64
	m        map[store.ConvKey]*cacheEntry
	// head is the most recently used entry, tail the least; nil when empty.
	head, tail *cacheEntry
}

type cacheEntry struct {
	key        store.ConvKey
	part       int
	st         *store.ConvState
	size       int64
	prev, next *cacheEntry
}

func newStateCache(maxBytes int64) *stateCache {
	return &stateCache{maxBytes: maxBytes, m: map[store.ConvKey]*cacheEntry{}}
}

// entrySize estimates what a cached state costs in memory: about twice its
// encoded size (string and slice headers, message structs), a few hundred
// bytes per kept message, the entry, map slot and key. Measured on folded
// conversations (3 to 50 messages of 30 to 200 bytes), the live heap was
// 58% to 95% of this estimate.
func entrySize(k store.ConvKey, st *store.ConvState) int64 {
	return int64(2*st.Size + 256*len(st.Facts.GetMessages()) + 2*(len(k.TenantID)+len(k.ConversationID)) + 1024)
}

// take removes and returns the states of keys that are cached.
func (c *stateCache) take(keys []store.ConvKey) map[store.ConvKey]*store.ConvState {
	out := make(map[store.ConvKey]*store.ConvState, len(keys))
	if c == nil {
		return out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if e := c.m[k]; e != nil {
			out[k] = e.st
			c.remove(e)
		}
	}
	return out
}

// put caches states of partition part as the most recently used, evicting
// the least recently used beyond the bound.
func (c *stateCache) put(part int, states map[store.ConvKey]*store.ConvState) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, st := range states {
		if e := c.m[k]; e != nil {
			c.remove(e)
		}
		e := &cacheEntry{key: k, part: part, st: st, size: entrySize(k, st)}
		if e.size > c.maxBytes {
			continue
		}
		c.m[k] = e
		c.bytes += e.size
		e.next = c.head
		if c.head != nil {
			c.head.prev = e
		}
		c.head = e
		if c.tail == nil {
			c.tail = e
		}
	}
	for c.bytes > c.maxBytes && c.tail != nil {
		c.remove(c.tail)
	}
}

// clear empties the cache.
func (c *stateCache) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = map[store.ConvKey]*cacheEntry{}
	c.head, c.tail, c.bytes = nil, nil, 0
}

// retain drops the states of every partition keep refuses.
func (c *stateCache) retain(keep func(part int) bool) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.m {
		if !keep(e.part) {
			c.remove(e)
		}
	}
}

// len is the number of cached states.
func (c *stateCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

func (c *stateCache) remove(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
	delete(c.m, e.key)
	c.bytes -= e.size
}
