package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// States of a job.
const (
	Queued    = "queued"
	Running   = "running"
	Succeeded = "succeeded"
	Failed    = "failed"
	Cancelled = "cancelled"
	Expired   = "expired"
)

// ErrNotFound means the tenant has no such job.
var ErrNotFound = errors.New("export: no such job")

// Job is one export job.
type Job struct {
	TenantID, ExportID string
	// Request is the CreateExportRequest as protojson.
	Request     []byte
	State       string
	RowsWritten int64
	Error       string
	BlobKey     string
	Manifest    *Manifest
	CreatedAt   time.Time
	FinishedAt  time.Time
	ExpiresAt   time.Time
}

// Store keeps jobs in PostgreSQL.
type Store struct{ pool *pgxpool.Pool }

// NewStore returns a store; the table comes with the statestore migrations.
func NewStore(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

const jobColumns = `tenant_id, export_id, request, state, rows_written, error, blob_key, manifest, created_at, finished_at, expires_at`

func scanJob(r pgx.Row) (*Job, error) {
	var j Job
	var manifest []byte
	var finished, expires *time.Time
	if err := r.Scan(&j.TenantID, &j.ExportID, &j.Request, &j.State, &j.RowsWritten, &j.Error, &j.BlobKey, &manifest,
		&j.CreatedAt, &finished, &expires); err != nil {
		return nil, err
	}
	if finished != nil {
		j.FinishedAt = *finished
	}
	if expires != nil {
		j.ExpiresAt = *expires
	}
	if len(manifest) > 0 {
		j.Manifest = &Manifest{}
		if err := json.Unmarshal(manifest, j.Manifest); err != nil {
			return nil, fmt.Errorf("export: manifest of %s: %w", j.ExportID, err)
		}
	}
	return &j, nil
}

// Create queues a job.
func (s *Store) Create(ctx context.Context, tenant, id string, request []byte) (*Job, error) {
	return scanJob(s.pool.QueryRow(ctx, `INSERT INTO reporting_exports (tenant_id, export_id, request, state)
		VALUES ($1, $2, $3, 'queued') RETURNING `+jobColumns, tenant, id, request))
}

// Get returns one of the tenant's jobs.
func (s *Store) Get(ctx context.Context, tenant, id string) (*Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, `SELECT `+jobColumns+` FROM reporting_exports WHERE tenant_id = $1 AND export_id = $2`, tenant, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	return j, err
}

// List returns up to n of the tenant's jobs, newest first, created before
// (before, beforeID) when before is set.
func (s *Store) List(ctx context.Context, tenant string, n int, before time.Time, beforeID string) ([]*Job, error) {
	q, args := `SELECT `+jobColumns+` FROM reporting_exports WHERE tenant_id = $1`, []any{tenant}
	if !before.IsZero() {
		q += ` AND (created_at, export_id) < ($3, $4)`
	}
	args = append(args, n)
	if !before.IsZero() {
		args = append(args, before, beforeID)
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY created_at DESC, export_id DESC LIMIT $2`, args...)
	if err != nil {
		return nil, err
	}
	return collectJobs(rows)
}

// Cancel stops a queued or running job; a finished job is returned as is.
func (s *Store) Cancel(ctx context.Context, tenant, id string) (*Job, error) {
	if _, err := s.pool.Exec(ctx, `UPDATE reporting_exports SET state = 'cancelled', finished_at = now()
		WHERE tenant_id = $1 AND export_id = $2 AND state IN ('queued', 'running')`, tenant, id); err != nil {
		return nil, err
	}
	return s.Get(ctx, tenant, id)
}

// Claim takes the oldest queued job, or a running one whose owner has not
// heartbeated for stale (a crashed replica), for owner. nil: no work.
func (s *Store) Claim(ctx context.Context, owner string, stale time.Duration) (*Job, error) {
	j, err := scanJob(s.pool.QueryRow(ctx, `UPDATE reporting_exports SET state = 'running', owner = $1, heartbeat_at = now(), rows_written = 0
		WHERE (tenant_id, export_id) = (SELECT tenant_id, export_id FROM reporting_exports
			WHERE state = 'queued' OR (state = 'running' AND heartbeat_at < now() - $2::interval)
			ORDER BY created_at LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING `+jobColumns, owner, stale.String()))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return j, err
}

// Heartbeat records progress; false means the job is no longer the
// owner's to run (cancelled, or taken over).
func (s *Store) Heartbeat(ctx context.Context, j *Job, owner string, rows int64) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE reporting_exports SET rows_written = $4, heartbeat_at = now()
		WHERE tenant_id = $1 AND export_id = $2 AND owner = $3 AND state = 'running'`, j.TenantID, j.ExportID, owner, rows)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// Succeed records a finished file; false means the job was cancelled or
// taken over meanwhile (the caller deletes its file).
func (s *Store) Succeed(ctx context.Context, j *Job, owner, key string, m *Manifest, expires time.Time) (bool, error) {
	raw, err := json.Marshal(m)
	if err != nil {
		return false, err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE reporting_exports SET state = 'succeeded', rows_written = $5, blob_key = $4, manifest = $6,
			finished_at = now(), expires_at = $7
		WHERE tenant_id = $1 AND export_id = $2 AND owner = $3 AND state = 'running'`,
		j.TenantID, j.ExportID, owner, key, int64(m.RowCount), raw, expires)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

// Fail records why a job failed (msg is shown to clients).
func (s *Store) Fail(ctx context.Context, j *Job, owner, msg string) error {
	_, err := s.pool.Exec(ctx, `UPDATE reporting_exports SET state = 'failed', error = $4, finished_at = now()
		WHERE tenant_id = $1 AND export_id = $2 AND owner = $3 AND state = 'running'`, j.TenantID, j.ExportID, owner, msg)
	return err
}

// ExpiredFiles returns up to n finished jobs whose files are past their
// expiry at now.
func (s *Store) ExpiredFiles(ctx context.Context, now time.Time, n int) ([]*Job, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+jobColumns+` FROM reporting_exports WHERE state = 'succeeded' AND expires_at <= $1 LIMIT $2`, now, n)
	if err != nil {
		return nil, err
	}
	return collectJobs(rows)
}

// MarkExpired records that a job's file was deleted.
func (s *Store) MarkExpired(ctx context.Context, j *Job) error {
	_, err := s.pool.Exec(ctx, `UPDATE reporting_exports SET state = 'expired' WHERE tenant_id = $1 AND export_id = $2 AND state = 'succeeded'`,
		j.TenantID, j.ExportID)
	return err
}

func collectJobs(rows pgx.Rows) ([]*Job, error) {
	defer rows.Close()
	var out []*Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, j)
	}
	return out, rows.Err()
}
