package loadgen

import (
	"math"
	"sync"
	"time"
)

// histogram records durations in logarithmic buckets (4% wide, from 1µs),
// so quantiles cost the same however long the run.
type histogram struct {
	mu      sync.Mutex
	buckets []uint64
	n       uint64
}

const (
	histGrowth  = 1.04
	histBuckets = 700 // 1.04^700 µs is far beyond any call
)

func newHistogram() *histogram { return &histogram{buckets: make([]uint64, histBuckets)} }

func histIndex(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	return min(int(math.Ceil(math.Log(us)/math.Log(histGrowth))), histBuckets-1)
}

func (h *histogram) record(d time.Duration) {
	h.mu.Lock()
	h.buckets[histIndex(d)]++
	h.n++
	h.mu.Unlock()
}

// quantile returns the upper bound of the bucket holding quantile q (0..1).
func (h *histogram) quantile(q float64) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.buckets {
		seen += c
		if seen >= rank {
			return time.Duration(math.Pow(histGrowth, float64(i)) * float64(time.Microsecond))
		}
	}
	return 0
}
