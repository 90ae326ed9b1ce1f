package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/parley-dev/parley/libs/grpcx"
	"github.com/parley-dev/parley/libs/tenancy"
	reportingv1 "github.com/parley-dev/parley/proto/parley/reporting/v1"
)

// Limits of the settings a tenant sets.
const (
	MaxBotIDLen    = 256
	MaxBotNameLen  = 100
	MaxBotsPerCall = 100
	MaxTimeZoneLen = 64
)

// SettingsStore keeps tenants' settings (libs/tenancy).
type SettingsStore interface {
	Settings(ctx context.Context, tenantID string) (tenancy.Settings, error)
	UpdateSettings(ctx context.Context, tenantID string, timeZone *string, bots map[string]string) error
}

// SettingsServer implements reportingv1.SettingsServiceServer.
type SettingsServer struct {
	reportingv1.UnimplementedSettingsServiceServer
	store SettingsStore
	log   *slog.Logger
}

// NewSettings returns the settings server.
func NewSettings(store SettingsStore, log *slog.Logger) *SettingsServer {
	return &SettingsServer{store: store, log: log}
}

// SettingsScopes lists the scope of each SettingsService method: read to
// read, admin to change.
func SettingsScopes() map[string]string {
	return grpcx.MethodScopes(reportingv1.SettingsService_ServiceDesc, grpcx.ScopeRead,
		map[string]string{"UpdateSettings": grpcx.ScopeAdmin})
}

// GetSettings returns the caller's tenant's settings.
func (s *SettingsServer) GetSettings(ctx context.Context, _ *reportingv1.GetSettingsRequest) (*reportingv1.TenantSettings, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	return s.read(ctx, p.TenantID)
}

// UpdateSettings validates every field, then changes them together.
func (s *SettingsServer) UpdateSettings(ctx context.Context, req *reportingv1.UpdateSettingsRequest) (*reportingv1.TenantSettings, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	if req.TimeZone != nil {
		if err := ValidTimeZone("time_zone", req.GetTimeZone()); err != nil {
			return nil, err
		}
	}
	if len(req.GetBots()) > MaxBotsPerCall {
		return nil, grpcx.Invalid("bots", fmt.Sprintf("at most %d bots per request", MaxBotsPerCall))
	}
	bots := map[string]string{}
	for i, b := range req.GetBots() {
		field := fmt.Sprintf("bots[%d]", i)
		if err := validText(field+".bot_id", b.GetBotId(), MaxBotIDLen); err != nil {
			return nil, err
		}
		if err := validText(field+".name", b.GetName(), MaxBotNameLen); err != nil {
			return nil, err
		}
		if _, dup := bots[b.GetBotId()]; dup {
			return nil, grpcx.Invalid(field+".bot_id", "appears twice in the request")
		}
		bots[b.GetBotId()] = b.GetName()
	}
	if err := s.store.UpdateSettings(ctx, p.TenantID, req.TimeZone, bots); err != nil {
		return nil, s.storeError(ctx, err)
	}
	return s.read(ctx, p.TenantID)
}

func (s *SettingsServer) read(ctx context.Context, tenant string) (*reportingv1.TenantSettings, error) {
	st, err := s.store.Settings(ctx, tenant)
	if err != nil {
		return nil, s.storeError(ctx, err)
	}
	out := &reportingv1.TenantSettings{TimeZone: st.TimeZone}
	for _, id := range st.BotIDs() {
		out.Bots = append(out.Bots, &reportingv1.Bot{BotId: id, Name: st.Bots[id]})
	}
	return out, nil
}

func (s *SettingsServer) storeError(ctx context.Context, err error) error {
	if errors.Is(err, tenancy.ErrNotFound) {
		return grpcx.NotFound("tenant not found")
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return grpcx.Unavailable("settings request cancelled or timed out; retry")
	}
	s.log.ErrorContext(ctx, "settings store failed", "err", err)
	return grpcx.Unavailable("settings store unavailable; retry later")
}

// ValidTimeZone checks an IANA time zone name; field names it in the
// InvalidArgument error.
func ValidTimeZone(field, tz string) error {
	switch {
	case tz == "":
		return grpcx.Invalid(field, "required: an IANA time zone such as Europe/Berlin")
	case len(tz) > MaxTimeZoneLen:
		return grpcx.Invalid(field, fmt.Sprintf("at most %d characters", MaxTimeZoneLen))
	case tz == "Local":
		return grpcx.Invalid(field, `"Local" is the server's zone; name an IANA time zone such as Europe/Berlin`)
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return grpcx.Invalid(field, fmt.Sprintf("unknown time zone %q", tz))
	}
	return nil
}

// validText checks a required, bounded, printable string.
func validText(field, v string, max int) error {
	switch {
	case strings.TrimSpace(v) == "":
		return grpcx.Invalid(field, "required")
	case !utf8.ValidString(v):
		return grpcx.Invalid(field, "not valid UTF-8")
	case utf8.RuneCountInString(v) > max:
		return grpcx.Invalid(field, fmt.Sprintf("at most %d characters", max))
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return grpcx.Invalid(field, "control characters are not allowed")
	}
	return nil
}
