package tenancy

import (
	"net/netip"
	"sync"
	"time"
)

// failureThrottle counts failed authentications per peer in fixed windows.
// A peer with limit failures in its window is refused until the window
// ends. IPv6 peers are counted per /64 (one host usually holds the whole
// prefix). At most maxPeers peers are tracked; when full, expired windows
// are dropped first, then the oldest window.
type failureThrottle struct {
	limit    int
	window   time.Duration
	maxPeers int

	mu    sync.Mutex
	peers map[string]*failWindow
}

type failWindow struct {
	start time.Time
	count int
}

func newFailureThrottle(limit int, window time.Duration, maxPeers int) *failureThrottle {
	return &failureThrottle{limit: limit, window: window, maxPeers: maxPeers, peers: map[string]*failWindow{}}
}

// peerKey is what failures are counted under.
func peerKey(addr string) string {
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Is4() {
		return addr
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

// blocked reports whether peer is refused now and for how much longer.
func (t *failureThrottle) blocked(peer string, now time.Time) (time.Duration, bool) {
	if peer == "" {
		return 0, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	w, ok := t.peers[peerKey(peer)]
	if !ok || w.count < t.limit {
		return 0, false
	}
	left := w.start.Add(t.window).Sub(now)
	return left, left > 0
}

// fail counts one failed authentication of peer.
func (t *failureThrottle) fail(peer string, now time.Time) {
	if peer == "" {
		return
	}
	k := peerKey(peer)
	t.mu.Lock()
	defer t.mu.Unlock()
	w, ok := t.peers[k]
	if ok && now.Sub(w.start) >= t.window {
		w.start, w.count = now, 0
	}
	if !ok {
		if len(t.peers) >= t.maxPeers {
			t.evict(now)
		}
		w = &failWindow{start: now}
		t.peers[k] = w
	}
	w.count++
}

func (t *failureThrottle) evict(now time.Time) {
	var oldest string
	var at time.Time
	for k, w := range t.peers {
		if now.Sub(w.start) >= t.window {
			delete(t.peers, k)
			continue
		}
		if oldest == "" || w.start.Before(at) {
			oldest, at = k, w.start
		}
	}
	if len(t.peers) >= t.maxPeers {
		delete(t.peers, oldest)
	}
}
