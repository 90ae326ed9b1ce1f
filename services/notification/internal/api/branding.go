package api

import (
	"context"
	"errors"

	"github.com/parley-dev/parley/libs/grpcx"
	notificationv1 "github.com/parley-dev/parley/proto/parley/notification/v1"
	"github.com/parley-dev/parley/services/notification/internal/mail"
	"github.com/parley-dev/parley/services/notification/internal/mailer"
	"github.com/parley-dev/parley/services/notification/internal/store"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// GetBranding implements NotificationService.
func (s *Server) GetBranding(ctx context.Context, _ *notificationv1.GetBrandingRequest) (*notificationv1.Branding, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	b, err := s.d.Store.Branding(ctx, p.TenantID)
	if err != nil {
		return nil, s.fail(ctx, "branding", err)
	}
	return brandingProto(b), nil
}

// SetBranding implements NotificationService: the whole branding is
// replaced after mail.Branding.Validate.
func (s *Server) SetBranding(ctx context.Context, req *notificationv1.SetBrandingRequest) (*notificationv1.Branding, error) {
	p, err := grpcx.RequireTenant(ctx)
	if err != nil {
		return nil, err
	}
	in := req.GetBranding()
	b := store.Branding{Name: in.GetName(), PrimaryColor: in.GetPrimaryColor(), AccentColor: in.GetAccentColor(),
		LogoURL: in.GetLogoUrl(), ReplyTo: in.GetReplyTo(), Contact: in.GetContact()}
	if err := mailer.Branding(b).Validate(); err != nil {
		var fe *mail.FieldError
		if errors.As(err, &fe) {
			return nil, grpcx.Invalid("branding."+fe.Field, fe.Description)
		}
		return nil, grpcx.Invalid("branding", "not usable")
	}
	b, err = s.d.Store.SetBranding(ctx, p.TenantID, b)
	if err != nil {
		return nil, s.fail(ctx, "branding", err)
	}
	return brandingProto(b), nil
}

func brandingProto(b store.Branding) *notificationv1.Branding {
	out := &notificationv1.Branding{Name: b.Name, PrimaryColor: b.PrimaryColor, AccentColor: b.AccentColor,
		LogoUrl: b.LogoURL, ReplyTo: b.ReplyTo, Contact: b.Contact}
	if !b.UpdatedAt.IsZero() {
		out.UpdatedAt = timestamppb.New(b.UpdatedAt)
	}
	return out
}
