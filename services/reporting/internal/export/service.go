package export

import (
	"context"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/parley-dev/parley/libs/eventbus"
	"github.com/parley-dev/parley/libs/grpcx"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
	"github.com/parley-dev/parley/services/reporting/internal/filter"
	"github.com/parley-dev/parley/services/reporting/internal/share"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ServiceDeps are what the gRPC service needs.
type ServiceDeps struct {
	Store *Store
	// Signer signs download links (its own secret, not share links').
	Signer *share.Signer
	// BaseURL is reporting's public HTTP base URL.
	BaseURL string
	// LinkTTL is how long a download link stays valid.
	LinkTTL time.Duration
	Log     *slog.Logger
	Now     func() time.Time
}

// Service serves ExportService.
type Service struct {
	reportingv1.UnimplementedExportServiceServer
	d ServiceDeps
}

// NewService returns the service.
func NewService(d ServiceDeps) *Service {
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.LinkTTL <= 0 {
		d.LinkTTL = 24 * time.Hour
	}
	return &Service{d: d}
}

// Scopes maps each method to the scope it needs.
func Scopes() map[string]string {
	return map[string]string{
		reportingv1.ExportService_CreateExport_FullMethodName: "read",
		reportingv1.ExportService_GetExport_FullMethodName:    "read",
		reportingv1.ExportService_ListExports_FullMethodName:  "read",
		reportingv1.ExportService_CancelExport_FullMethodName: "read",
	}
}

// CreateExport queues a job.
func (s *Service) CreateExport(ctx context.Context, req *reportingv1.CreateExportRequest) (*reportingv1.Export, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	j, err := s.Create(ctx, p.TenantID, req)
	if err != nil {
		return nil, err
	}
	return s.proto(j), nil
}

// Create checks and queues a job for tenant (schedules call it too).
func (s *Service) Create(ctx context.Context, tenant string, req *reportingv1.CreateExportRequest) (*Job, error) {
	if _, err := Resolve(req); err != nil {
		var fe *FieldError
		errors.As(err, &fe)
		return nil, grpcx.Invalid(fe.Field, fe.Description)
	}
	if tz := req.GetTimeZone(); tz != "" {
		if _, err := time.LoadLocation(tz); err != nil || tz == "Local" {
			return nil, grpcx.Invalid("time_zone", "an IANA time zone")
		}
	}
	// The filter is checked now, so a bad one fails here, not in the job.
	if _, v := filter.Build(tenant, req.GetFilter(), s.d.Now(), "UTC"); v != nil {
		return nil, grpcx.Invalid("filter."+v.Field, v.Description)
	}
	raw, err := protojson.Marshal(req)
	if err != nil {
		return nil, grpcx.Internal("export request could not be recorded")
	}
	j, err := s.d.Store.Create(ctx, tenant, eventbus.NewEventID(), raw)
	if err != nil {
		return nil, s.unavailable(ctx, err)
	}
	return j, nil
}

// GetExport returns a job with a fresh download link once done.
func (s *Service) GetExport(ctx context.Context, req *reportingv1.GetExportRequest) (*reportingv1.Export, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetExportId() == "" {
		return nil, grpcx.Invalid("export_id", "required")
	}
	j, err := s.d.Store.Get(ctx, p.TenantID, req.GetExportId())
	if errors.Is(err, ErrNotFound) {
		return nil, grpcx.NotFound("export %s not found", req.GetExportId())
	}
	if err != nil {
		return nil, s.unavailable(ctx, err)
	}
	return s.proto(j), nil
}

// ListExports lists the tenant's jobs, newest first.
func (s *Service) ListExports(ctx context.Context, req *reportingv1.ListExportsRequest) (*reportingv1.ListExportsResponse, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	if size == 0 {
		size = 50
	}
	if size > 200 {
		return nil, grpcx.Invalid("page_size", "at most 200")
	}
	var before time.Time
	var beforeID string
	if t := req.GetPageToken(); t != "" {
		raw, err := base64.RawURLEncoding.DecodeString(t)
		at, id, ok := strings.Cut(string(raw), "|")
		if err == nil && ok {
			before, err = time.Parse(time.RFC3339Nano, at)
		}
		if err != nil || !ok || id == "" {
			return nil, grpcx.Invalid("page_token", "not issued by this service")
		}
		beforeID = id
	}
	jobs, err := s.d.Store.List(ctx, p.TenantID, size+1, before, beforeID)
	if err != nil {
		return nil, s.unavailable(ctx, err)
	}
	out := &reportingv1.ListExportsResponse{}
	if len(jobs) > size {
		jobs = jobs[:size]
		last := jobs[size-1]
		out.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(last.CreatedAt.Format(time.RFC3339Nano) + "|" + last.ExportID))
	}
	for _, j := range jobs {
		out.Exports = append(out.Exports, s.proto(j))
	}
	return out, nil
}

// CancelExport stops a queued or running job.
func (s *Service) CancelExport(ctx context.Context, req *reportingv1.CancelExportRequest) (*reportingv1.Export, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetExportId() == "" {
		return nil, grpcx.Invalid("export_id", "required")
	}
	j, err := s.d.Store.Cancel(ctx, p.TenantID, req.GetExportId())
	if errors.Is(err, ErrNotFound) {
		return nil, grpcx.NotFound("export %s not found", req.GetExportId())
	}
	if err != nil {
		return nil, s.unavailable(ctx, err)
	}
	return s.proto(j), nil
}

func (s *Service) unavailable(ctx context.Context, err error) error {
	s.d.Log.ErrorContext(ctx, "export store failed", "err", err)
	return grpcx.Unavailable("export store unavailable; retry later")
}

var states = map[string]reportingv1.ExportState{
	Queued: reportingv1.ExportState_EXPORT_STATE_QUEUED, Running: reportingv1.ExportState_EXPORT_STATE_RUNNING,
	Succeeded: reportingv1.ExportState_EXPORT_STATE_SUCCEEDED, Failed: reportingv1.ExportState_EXPORT_STATE_FAILED,
	Cancelled: reportingv1.ExportState_EXPORT_STATE_CANCELLED, Expired: reportingv1.ExportState_EXPORT_STATE_EXPIRED,
}

// Link kinds a download token grants.
const (
	linkFile     = "file"
	linkManifest = "manifest"
)

// DownloadURL returns a signed link to a job's file (or its manifest).
func (s *Service) DownloadURL(j *Job, what string, expires time.Time) string {
	tok := s.d.Signer.Sign(share.Grant{Tenant: j.TenantID, Conversation: what, LinkID: j.ExportID, Expires: expires})
	return strings.TrimRight(s.d.BaseURL, "/") + DownloadPath + url.PathEscape(tok)
}

func (s *Service) proto(j *Job) *reportingv1.Export {
	out := &reportingv1.Export{ExportId: j.ExportID, State: states[j.State], RowsWritten: uint64(j.RowsWritten),
		CreatedAt: timestamppb.New(j.CreatedAt), Error: j.Error}
	req := &reportingv1.CreateExportRequest{}
	if protojson.Unmarshal(j.Request, req) == nil {
		out.Request = req
	}
	if !j.FinishedAt.IsZero() {
		out.FinishedAt = timestamppb.New(j.FinishedAt)
	}
	if m := j.Manifest; m != nil && j.State == Succeeded {
		out.Manifest = &reportingv1.ExportManifest{TenantId: m.TenantID, ExportId: m.ExportID, RequestJson: string(m.Request),
			AppliedSequence: m.AppliedSequence, RowCount: m.RowCount, Sha256: m.SHA256, SizeBytes: m.SizeBytes, Columns: m.Columns,
			Format: string(m.Format), CreatedAt: timestamppb.New(m.CreatedAt)}
		exp := s.d.Now().Add(s.d.LinkTTL)
		if exp.After(j.ExpiresAt) {
			exp = j.ExpiresAt
		}
		out.DownloadUrl = s.DownloadURL(j, linkFile, exp)
		out.ManifestUrl = s.DownloadURL(j, linkManifest, exp)
		out.DownloadExpiresAt = timestamppb.New(exp)
		out.FileExpiresAt = timestamppb.New(j.ExpiresAt)
	}
	return out
}
