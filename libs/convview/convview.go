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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/parley-dev/parley/libs/eventbus"
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

// Ensure creates or updates the bucket (its stream accepting atomic
// batches, so that many entries cost one stream write: MarkEndedAll).
func Ensure(ctx context.Context, bus *eventbus.Bus, ttl time.Duration, replicas int) (jetstream.KeyValue, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if replicas <= 0 {
		replicas = 1
	}
	kv, err := bus.EnsureKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "Parley: conversations lifecycle has ended (fast view for ingest)",
		History:     1,
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
	}, true)
	if err != nil {
		return nil, fmt.Errorf("convview: %w", err)
	}
	return kv, nil
}

// Open opens the bucket, creating it with DefaultTTL when it does not
// exist yet, and returns it with its TTL.
func Open(ctx context.Context, bus *eventbus.Bus) (jetstream.KeyValue, time.Duration, error) {
	kv, found, err := bus.KeyValue(ctx, Bucket)
	if err == nil && !found {
		kv, err = Ensure(ctx, bus, DefaultTTL, bus.Replicas())
	}
	if err != nil {
		return nil, 0, fmt.Errorf("convview: %w", err)
	}
	ttl := DefaultTTL
	if st, err := kv.Status(ctx); err == nil && st.TTL() > 0 {
		ttl = st.TTL()
	}
	return kv, ttl, nil
}

// streamName is the stream behind the bucket, and subjectPrefix the prefix
// of its keys' subjects.
const (
	streamName    = "KV_" + Bucket
	subjectPrefix = "$KV." + Bucket + "."
)

// Entry is one ended conversation to record.
type Entry struct {
	TenantID, ConversationID string
	At                       time.Time
	Reason                   eventv1.EndReason
}

// AtomicPublisher stores messages as one JetStream atomic batch
// (eventbus.Bus.PublishAtomic).
type AtomicPublisher func(ctx context.Context, msgs []*nats.Msg) (uint64, error)

// Writer records ended conversations.
type Writer struct {
	kv     jetstream.KeyValue
	atomic AtomicPublisher
}

// NewWriter returns a writer on the bucket. With an atomic publisher,
// MarkEndedAll stores many entries in one stream write.
func NewWriter(kv jetstream.KeyValue, atomic ...AtomicPublisher) *Writer {
	w := &Writer{kv: kv}
	if len(atomic) > 0 {
		w.atomic = atomic[0]
	}
	return w
}

// MarkEndedAll records several ended conversations at once: one atomic
// batch when the writer has an atomic publisher, else one put each. On
// error none or some of them may be recorded; recording again is harmless.
func (w *Writer) MarkEndedAll(ctx context.Context, entries []Entry) error {
	if w.atomic == nil || len(entries) < 2 {
		for _, e := range entries {
			if err := w.MarkEnded(ctx, e.TenantID, e.ConversationID, e.At, e.Reason); err != nil {
				return err
			}
		}
		return nil
	}
	msgs := make([]*nats.Msg, len(entries))
	for i, e := range entries {
		data, err := json.Marshal(Ended{EndedAt: e.At.UTC(), Name: e.Reason.String()})
		if err != nil {
			return err
		}
		msgs[i] = &nats.Msg{Subject: subjectPrefix + Key(e.TenantID, e.ConversationID), Data: data, Header: nats.Header{}}
	}
	if _, err := w.atomic(ctx, msgs); err != nil {
		return fmt.Errorf("convview: batch put: %w", err)
	}
	return nil
}

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
