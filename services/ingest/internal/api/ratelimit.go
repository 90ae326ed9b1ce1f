package api

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Limit is a token bucket: Rate events per second with bursts of Burst.
type Limit struct {
	Rate  float64
	Burst int
}

// RateLimiter limits the events each tenant may append per second. A nil
// *RateLimiter allows everything.
type RateLimiter struct {
	def       Limit
	overrides map[string]Limit
	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
}

// NewRateLimiter returns a limiter with a default limit for every tenant and
// per-tenant overrides. A Rate of 0 means unlimited. It returns nil when no
// tenant is limited.
func NewRateLimiter(def Limit, overrides map[string]Limit) *RateLimiter {
	limited := def.Rate > 0
	for _, l := range overrides {
		limited = limited || l.Rate > 0
	}
	if !limited {
		return nil
	}
	return &RateLimiter{def: def, overrides: overrides, buckets: map[string]*rate.Limiter{}}
}

// Allow takes n events from the tenant's bucket, or returns ResourceExhausted
// with a RetryInfo saying when n events will be available. A request larger
// than the burst is never allowed.
func (r *RateLimiter) Allow(tenant string, n int, now time.Time) error {
	if r == nil {
		return nil
	}
	l, ok := r.overrides[tenant]
	if !ok {
		l = r.def
	}
	if l.Rate <= 0 {
		return nil
	}
	r.mu.Lock()
	b, ok := r.buckets[tenant]
	if !ok {
		burst := l.Burst
		if burst <= 0 {
			burst = max(int(l.Rate), 1)
		}
		b = rate.NewLimiter(rate.Limit(l.Rate), burst)
		r.buckets[tenant] = b
	}
	r.mu.Unlock()
	if n > b.Burst() {
		return status.Errorf(codes.ResourceExhausted, "events: %d events exceed tenant %s's burst of %d; send smaller requests", n, tenant, b.Burst())
	}
	res := b.ReserveN(now, n)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		st := status.New(codes.ResourceExhausted, fmt.Sprintf("tenant %s is over its ingest rate limit of %g events/s; retry in %s", tenant, l.Rate, d.Round(time.Millisecond)))
		if dt, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); err == nil {
			return dt.Err()
		}
		return st.Err()
	}
	return nil
}

// ParseLimits reads per-tenant limits written as
// "tenant=rate[:burst],tenant2=rate[:burst]".
func ParseLimits(s string) (map[string]Limit, error) {
	out := map[string]Limit{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		tenant, spec, ok := strings.Cut(part, "=")
		if !ok || tenant == "" {
			return nil, fmt.Errorf("rate limit %q: want tenant=rate[:burst]", part)
		}
		rs, bs, hasBurst := strings.Cut(spec, ":")
		r, err := strconv.ParseFloat(rs, 64)
		if err != nil || r < 0 {
			return nil, fmt.Errorf("rate limit %q: rate must be a number ≥ 0", part)
		}
		l := Limit{Rate: r}
		if hasBurst {
			b, err := strconv.Atoi(bs)
			if err != nil || b <= 0 {
				return nil, fmt.Errorf("rate limit %q: burst must be a positive integer", part)
			}
			l.Burst = b
		}
		out[strings.TrimSpace(tenant)] = l
	}
	return out, nil
}
