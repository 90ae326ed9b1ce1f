// Package convview is the fast view of ended conversations. Lifecycle, which
// owns every conversation's state, writes an entry to the JetStream key-value
// bucket PARLEY_CONV_ENDED as soon as it ends a conversation; ingest watches
// the bucket and keeps the entries in memory, so refusing a message to an
// ended conversation costs a map lookup instead of a round trip.
//
// Entries expire after the bucket's TTL (default 7 days). Events for a
// conversation that ended before that are still accepted by ingest and
// recorded by lifecycle as late events: the conversation never reopens.
package convview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	eventv1 "github.com/parley-dev/parley/proto/parley/event/v1"
)

// Bucket is the name of the key-value bucket. Keys are
// "<tenant_id>.<conversation_id>".
const Bucket = "PARLEY_CONV_ENDED"

// DefaultTTL is how long an entry stays in the bucket unless configured.
const DefaultTTL = 7 * 24 * time.Hour

// Ended is what the view knows about an ended conversation.
type Ended struct {
	EndedAt time.Time         `json:"ended_at"`
	Reason  eventv1.EndReason `json:"-"`
	Name    string            `json:"reason"`
}

// Key is the bucket key of a conversation. Tenant and conversation ids are
// subject-safe ([A-Za-z0-9_-]), so they are valid key tokens.
func Key(tenantID, conversationID string) string { return tenantID + "." + conversationID }

// Ensure creates or updates the bucket.
func Ensure(ctx context.Context, js jetstream.JetStream, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if replicas <= 0 {
		replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Parley: conversations lifecycle has ended (fast view for ingest)",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("convview: bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// Writer records ended conversations.
type Writer struct{ kv jetstream.KeyValue }

// NewWriter returns a writer on the bucket.
func NewWriter(kv jetstream.KeyValue) *Writer { return &Writer{kv: kv} }

// MarkEnded records that a conversation ended. Writing the same entry again
// is harmless.
func (w *Writer) MarkEnded(ctx context.Context, tenantID, conversationID string, at time.Time, reason eventv1.EndReason) error {
	data, err := json.Marshal(Ended{EndedAt: at.UTC(), Name: reason.String()})
	if err != nil {
		return err
	}
	if _, err := w.kv.Put(ctx, Key(tenantID, conversationID), data); err != nil {
		return fmt.Errorf("convview: put: %w", err)
	}
	return nil
}

// Reader is an in-memory copy of the bucket, kept current by a watch.
type Reader struct {
	ttl   time.Duration
	log   *slog.Logger
	mu    sync.RWMutex
	m     map[string]Ended
	ready chan struct{}
	err   error
	now   func() time.Time
}

// Watch starts copying the bucket into memory until ctx ends. Lookups
// answer "not ended" until the initial copy is complete; Ready tells when it
// is.
func Watch(ctx context.Context, kv jetstream.KeyValue, ttl time.Duration, log *slog.Logger) (*Reader, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("convview: watch: %w", err)
	}
	r := &Reader{ttl: ttl, log: log, m: map[string]Ended{}, ready: make(chan struct{}), now: time.Now}
	go r.run(ctx, w)
	return r, nil
}

func (r *Reader) run(ctx context.Context, w jetstream.KeyWatcher) {
	defer func() { _ = w.Stop() }()
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	initial := true
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
			r.evictExpired()
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e == nil { // end of the initial values
				if initial {
					initial = false
					close(r.ready)
				}
				continue
			}
			r.apply(e)
		}
	}
}

func (r *Reader) apply(e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(r.m, e.Key())
		return
	}
	var v Ended
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		r.log.Warn("convview: unreadable entry", "key", e.Key(), "error", err)
		return
	}
	v.Reason = eventv1.EndReason(eventv1.EndReason_value[v.Name])
	r.m[e.Key()] = v
}

// evictExpired drops entries the bucket has expired (a TTL expiry sends no
// update to watchers).
func (r *Reader) evictExpired() {
	cutoff := r.now().Add(-r.ttl)
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.m {
		if v.EndedAt.Before(cutoff) {
			delete(r.m, k)
		}
	}
}

// Ended reports whether the conversation has ended, and when.
func (r *Reader) Ended(tenantID, conversationID string) (Ended, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	v, ok := r.m[Key(tenantID, conversationID)]
	return v, ok
}

// Len is the number of ended conversations held in memory.
func (r *Reader) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.m)
}

// Ready returns nil once the initial copy of the bucket is complete.
func (r *Reader) Ready(ctx context.Context) error {
	select {
	case <-r.ready:
		return nil
	default:
	}
	select {
	case <-r.ready:
		return nil
	case <-ctx.Done():
		return errors.New("convview: initial copy of " + Bucket + " not complete")
	}
}

// SplitKey is the inverse of Key.
func SplitKey(key string) (tenantID, conversationID string, ok bool) {
	return strings.Cut(key, ".")
}
