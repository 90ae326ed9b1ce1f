package export

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/filter"
	"github.com/parley-dev/parley/services/reporting/internal/query"
	"gocloud.dev/blob"
	"google.golang.org/protobuf/encoding/protojson"
)

// Source streams a kind's rows (query.Reader).
type Source interface {
	Stream(ctx context.Context, kind string, w *filter.Where, o query.ReportOptions, row func([]string) error) error
}

// TimeZones tells a tenant's time zone.
type TimeZones interface {
	TimeZone(ctx context.Context, tenantID string) (string, error)
}

// BotNames tells a tenant's bot display names by bot id.
type BotNames interface {
	BotNames(ctx context.Context, tenantID string) (map[string]string, error)
}

// RunnerDeps are what a runner needs.
type RunnerDeps struct {
	Store  *Store
	Bucket *blob.Bucket
	Source Source
	// Applied returns the stream sequence the projection has applied.
	Applied   func(ctx context.Context) (uint64, error)
	TimeZones TimeZones
	Bots      BotNames
	// ConsoleBaseURL prefixes conversation links.
	ConsoleBaseURL string
	// Owner names this replica.
	Owner string
	// Retention is how long files are kept.
	Retention time.Duration
	// Stale is how long a running job goes without a heartbeat before
	// another replica takes it over.
	Stale time.Duration
	// Heartbeat is how often progress is recorded (and cancellation seen).
	Heartbeat time.Duration
	// Poll is how often the runner looks for work when idle.
	Poll time.Duration
	Log  *slog.Logger
	Now  func() time.Time
}

// Runner runs jobs in the background; every replica runs one.
type Runner struct{ d RunnerDeps }

// NewRunner returns a runner; zero durations get defaults.
func NewRunner(d RunnerDeps) *Runner {
	if d.Retention <= 0 {
		d.Retention = 7 * 24 * time.Hour
	}
	if d.Heartbeat <= 0 {
		d.Heartbeat = time.Second
	}
	if d.Stale <= 0 {
		d.Stale = 30 * time.Second
	}
	if d.Poll <= 0 {
		d.Poll = time.Second
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Runner{d: d}
}

// Run claims and runs jobs and deletes expired files until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	t := time.NewTicker(r.d.Poll)
	defer t.Stop()
	for {
		if err := r.Sweep(ctx); err != nil && ctx.Err() == nil {
			r.d.Log.WarnContext(ctx, "export sweep failed", "err", err)
		}
		for {
			did, err := r.RunOnce(ctx)
			if err != nil && ctx.Err() == nil {
				r.d.Log.WarnContext(ctx, "export claim failed", "err", err)
			}
			if !did || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// errStopped means the job was cancelled or taken over while running.
var errStopped = errors.New("export: job stopped")

// safeError is a failure whose message clients may see.
type safeError struct{ msg string }

func (e *safeError) Error() string { return e.msg }

// RunOnce claims one job and runs it; false when there was none.
func (r *Runner) RunOnce(ctx context.Context) (bool, error) {
	j, err := r.d.Store.Claim(ctx, r.d.Owner, r.d.Stale)
	if err != nil || j == nil {
		return false, err
	}
	err = r.run(ctx, j)
	switch {
	case err == nil, errors.Is(err, errStopped):
	case ctx.Err() != nil:
		// Shutting down: another replica takes the job over once stale.
	default:
		msg := "export failed; create it again later"
		var se *safeError
		if errors.As(err, &se) {
			msg = se.msg
		}
		r.d.Log.ErrorContext(ctx, "export failed", "tenant", j.TenantID, "export", j.ExportID, "err", err)
		if ferr := r.d.Store.Fail(context.WithoutCancel(ctx), j, r.d.Owner, msg); ferr != nil {
			r.d.Log.WarnContext(ctx, "export failure not recorded", "export", j.ExportID, "err", ferr)
		}
	}
	return true, nil
}

// Key is where a job's file lives in the bucket.
func Key(tenant, id string, f Format) string { return tenant + "/" + id + "." + string(f) }

func (r *Runner) run(ctx context.Context, j *Job) error {
	req := &reportingv1.CreateExportRequest{}
	if err := protojson.Unmarshal(j.Request, req); err != nil {
		return fmt.Errorf("export: request: %w", err)
	}
	spec, err := Resolve(req)
	if err != nil {
		return &safeError{msg: err.Error()}
	}
	tz := "UTC"
	if req.GetFilter().GetTimeRange().GetTimeZone() == "" && r.d.TimeZones != nil {
		if tz, err = r.d.TimeZones.TimeZone(ctx, j.TenantID); err != nil {
			return err
		}
	}
	w, v := filter.Build(j.TenantID, req.GetFilter(), j.CreatedAt, tz)
	if v != nil {
		return &safeError{msg: v.Error()}
	}
	o := query.ReportOptions{WithTimes: req.GetWithMessageTimes(), Location: w.Location, ConsoleBaseURL: r.d.ConsoleBaseURL}
	if req.GetTimeZone() != "" {
		if o.Location, err = time.LoadLocation(req.GetTimeZone()); err != nil {
			return &safeError{msg: "time_zone: unknown"}
		}
	}
	if r.d.Bots != nil {
		if o.BotNames, err = r.d.Bots.BotNames(ctx, j.TenantID); err != nil {
			return err
		}
	}
	var applied uint64
	if r.d.Applied != nil {
		if applied, err = r.d.Applied(ctx); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	key := Key(j.TenantID, j.ExportID, spec.Format)
	bw, err := r.d.Bucket.NewWriter(ctx, key, &blob.WriterOptions{ContentType: spec.Format.ContentType()})
	if err != nil {
		return err
	}
	cw := &countingHash{w: bw, h: sha256.New()}
	fw, err := NewWriter(spec.Format, cw, spec.Columns, WriterOptions{BOM: req.GetCsvBom()})
	if err != nil {
		cancel()
		_ = bw.Close()
		return err
	}
	// Heartbeats run beside the query (which may take a while before its
	// first row) and the file's finishing; a lost job cancels both.
	var rows atomic.Int64
	var stopped atomic.Bool
	done, beaten := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(beaten)
		r.heartbeats(ctx, j, &rows, done, func() { stopped.Store(true); cancel() })
	}()
	out := make([]string, len(spec.Columns))
	err = r.d.Source.Stream(ctx, spec.Kind, w, o, func(row []string) error {
		if stopped.Load() {
			return errStopped // rows already received are not written
		}
		for i, c := range spec.Index {
			out[i] = row[c]
		}
		if err := fw.Write(out); err != nil {
			return err
		}
		rows.Add(1)
		return nil
	})
	if err == nil {
		err = fw.Close()
	}
	if err == nil {
		err = bw.Close()
	} else {
		cancel() // aborts the blob write
		_ = bw.Close()
	}
	close(done)
	<-beaten
	if stopped.Load() {
		_ = r.d.Bucket.Delete(context.WithoutCancel(ctx), key)
		return errStopped
	}
	if err != nil {
		return err
	}
	raw, _ := json.Marshal(json.RawMessage(j.Request))
	m := &Manifest{TenantID: j.TenantID, ExportID: j.ExportID, Request: raw, AppliedSequence: applied, RowCount: uint64(rows.Load()),
		SHA256: hex.EncodeToString(cw.h.Sum(nil)), SizeBytes: uint64(cw.n), Columns: spec.Columns, Format: spec.Format, CreatedAt: r.d.Now().UTC()}
	ok, err := r.d.Store.Succeed(ctx, j, r.d.Owner, key, m, r.d.Now().Add(r.d.Retention))
	if err != nil || !ok {
		_ = r.d.Bucket.Delete(context.WithoutCancel(ctx), key)
		if err == nil {
			err = errStopped
		}
		return err
	}
	return nil
}

// heartbeats records progress every Heartbeat until done; lost is called
// (once) when the job is no longer this runner's (cancelled, taken over).
func (r *Runner) heartbeats(ctx context.Context, j *Job, rows *atomic.Int64, done <-chan struct{}, lost func()) {
	t := time.NewTicker(r.d.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := r.d.Store.Heartbeat(ctx, j, r.d.Owner, rows.Load())
		if err != nil {
			// PostgreSQL unreachable: keep going; if it stays away past
			// the stale time another replica takes the job over.
			r.d.Log.WarnContext(ctx, "export heartbeat failed", "export", j.ExportID, "err", err)
			continue
		}
		if !ok {
			lost()
			return
		}
	}
}

// Sweep deletes files past their expiry.
func (r *Runner) Sweep(ctx context.Context) error {
	jobs, err := r.d.Store.ExpiredFiles(ctx, r.d.Now(), 100)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if err := r.d.Bucket.Delete(ctx, j.BlobKey); err != nil && !isNotFound(err) {
			return err
		}
		if err := r.d.Store.MarkExpired(ctx, j); err != nil {
			return err
		}
	}
	return nil
}

// countingHash writes through, hashing and counting the bytes.
type countingHash struct {
	w io.Writer
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

// Spec is a request resolved: what to read and how to write it.
type Spec struct {
	Kind    string
	Format  Format
	Columns []string
	// Index[i] is the source column of Columns[i].
	Index []int
}

// Resolve checks a request and resolves its kind, format and columns; the
// error names the field.
func Resolve(req *reportingv1.CreateExportRequest) (*Spec, error) {
	s := &Spec{}
	switch req.GetSource() {
	case reportingv1.ExportSource_EXPORT_SOURCE_CONVERSATIONS:
		s.Kind = query.ExportConversations
	case reportingv1.ExportSource_EXPORT_SOURCE_TRANSCRIPTS:
		s.Kind = query.ExportTranscripts
	case reportingv1.ExportSource_EXPORT_SOURCE_REPORT:
		if !slices.Contains(query.ReportKinds, req.GetReportKind()) {
			return nil, &FieldError{Field: "report_kind", Description: "one of the RunReport kinds"}
		}
		s.Kind = req.GetReportKind()
	default:
		return nil, &FieldError{Field: "source", Description: "CONVERSATIONS, TRANSCRIPTS or REPORT"}
	}
	switch req.GetFormat() {
	case reportingv1.ExportFormat_EXPORT_FORMAT_CSV:
		s.Format = CSV
	case reportingv1.ExportFormat_EXPORT_FORMAT_XLSX:
		s.Format = XLSX
	case reportingv1.ExportFormat_EXPORT_FORMAT_PARQUET:
		s.Format = Parquet
	default:
		return nil, &FieldError{Field: "format", Description: "CSV, XLSX or PARQUET"}
	}
	all := query.ExportColumns(s.Kind)
	s.Columns = req.GetColumns()
	if len(s.Columns) == 0 {
		s.Columns = all
	}
	seen := map[string]bool{}
	for _, c := range s.Columns {
		i := slices.Index(all, c)
		if i < 0 || seen[c] {
			return nil, &FieldError{Field: "columns", Description: fmt.Sprintf("%q is not a column of %s (or is repeated)", c, s.Kind)}
		}
		seen[c] = true
		s.Index = append(s.Index, i)
	}
	return s, nil
}

// FieldError is a request field's problem.
type FieldError struct{ Field, Description string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Description }
