package tenancy

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/libs/grpcx"
)

// AuditConfig tunes the audit log writer.
type AuditConfig struct {
	// QueueSize bounds the records waiting to be written.
	QueueSize int `env:"PARLEY_AUDIT_QUEUE_SIZE" envDefault:"10000"`
	// MaxBlock is how long a call may wait for room in a full queue before
	// its record is dropped (counted and logged as an error).
	MaxBlock time.Duration `env:"PARLEY_AUDIT_MAX_BLOCK" envDefault:"50ms"`
}

// auditBatch is the most rows one write carries.
const auditBatch = 500

// AuditWriter is a grpcx.AuditSink that writes records to the audit_log
// table in batches from its own goroutine, so calls do not wait for the
// database. When the queue is full (the database is slow or down), Record
// waits up to MaxBlock for room, then drops the record: every drop is
// counted (Dropped) and logged at error level, never silent. A batch the
// database refuses is retried until Close.
type AuditWriter struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	queue    chan grpcx.AuditRecord
	maxBlock time.Duration
	dropped  atomic.Int64
	lastLog  atomic.Int64 // UnixNano of the last drop logged
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// NewAuditWriter starts a writer; Close flushes and stops it.
func NewAuditWriter(pool *pgxpool.Pool, cfg AuditConfig, log *slog.Logger) *AuditWriter {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 10000
	}
	if cfg.MaxBlock <= 0 {
		cfg.MaxBlock = 50 * time.Millisecond
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &AuditWriter{
		pool: pool, log: log, queue: make(chan grpcx.AuditRecord, cfg.QueueSize), maxBlock: cfg.MaxBlock,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go w.run()
	return w
}

// Record queues r (grpcx.AuditSink).
func (w *AuditWriter) Record(r grpcx.AuditRecord) {
	select {
	case w.queue <- r:
		return
	default:
	}
	t := time.NewTimer(w.maxBlock)
	defer t.Stop()
	select {
	case w.queue <- r:
	case <-t.C:
		n := w.dropped.Add(1)
		// Loud but bounded: one error line per second carries the count.
		now := time.Now().UnixNano()
		if last := w.lastLog.Load(); now-last >= int64(time.Second) && w.lastLog.CompareAndSwap(last, now) {
			w.log.Error("audit queue full: audit records dropped", "dropped_total", n,
				"method", r.Method, "tenant_id", r.TenantID, "key_id", r.KeyID, "code", r.Code)
		}
	}
}

// Dropped is how many records were dropped because the queue was full.
func (w *AuditWriter) Dropped() int64 { return w.dropped.Load() }

// Close writes what is queued (bounded by a few seconds) and stops.
func (w *AuditWriter) Close() {
	w.once.Do(func() { close(w.stop) })
	<-w.done
}

func (w *AuditWriter) run() {
	defer close(w.done)
	batch := make([]grpcx.AuditRecord, 0, auditBatch)
	for {
		select {
		case r := <-w.queue:
			batch = append(batch[:0], r)
		case <-w.stop:
			w.drain(batch[:0])
			return
		}
	fill:
		for len(batch) < auditBatch {
			select {
			case r := <-w.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		w.writeRetrying(batch)
	}
}

// writeRetrying writes batch, retrying with backoff until it succeeds or
// the writer stops (then one last attempt is made by drain).
func (w *AuditWriter) writeRetrying(batch []grpcx.AuditRecord) {
	backoff := 100 * time.Millisecond
	for {
		err := w.write(context.Background(), batch)
		if err == nil {
			return
		}
		w.log.Error("cannot write the audit log; retrying", "rows", len(batch), "err", err)
		select {
		case <-time.After(backoff):
			backoff = min(2*backoff, 5*time.Second)
		case <-w.stop:
			w.drain(batch)
			return
		}
	}
}

// drain writes batch and whatever is queued, once, within 5 seconds.
func (w *AuditWriter) drain(batch []grpcx.AuditRecord) {
	for len(w.queue) > 0 { // the only reader: no race
		batch = append(batch, <-w.queue)
	}
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.write(ctx, batch); err != nil {
		w.dropped.Add(int64(len(batch)))
		w.log.Error("audit records lost at shutdown: cannot write the audit log", "rows", len(batch), "err", err)
	}
}

func (w *AuditWriter) write(ctx context.Context, batch []grpcx.AuditRecord) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := w.pool.CopyFrom(ctx, pgx.Identifier{"audit_log"}, []string{"at", "tenant_id", "key_id", "method", "code", "peer"},
		pgx.CopyFromSlice(len(batch), func(i int) ([]any, error) {
			r := batch[i]
			var tenant *string
			if r.TenantID != "" {
				tenant = &r.TenantID
			}
			return []any{r.At, tenant, r.KeyID, r.Method, r.Code, r.Peer}, nil
		}))
	return err
}

// AuditEntry is a row of the audit log.
type AuditEntry struct {
	grpcx.AuditRecord
	ID int64
}

// AuditFilter selects audit rows: one tenant's ("" for every row), since a
// time, at most Limit (default 100).
type AuditFilter struct {
	TenantID string
	Since    time.Time
	Limit    int
}

// ListAudit returns audit rows, newest first.
func (s *Store) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEntry, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT id, at, coalesce(tenant_id, ''), key_id, method, code, peer FROM audit_log
		WHERE ($1 = '' OR tenant_id = $1) AND at >= $2 ORDER BY at DESC, id DESC LIMIT $3`, f.TenantID, f.Since, f.Limit)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		err := r.Scan(&e.ID, &e.At, &e.TenantID, &e.KeyID, &e.Method, &e.Code, &e.Peer)
		return e, err
	})
}
