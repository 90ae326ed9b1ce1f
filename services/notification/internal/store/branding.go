package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// Branding is a tenant's stored email branding (mail.Branding's fields).
type Branding struct {
	Name, PrimaryColor, AccentColor, LogoURL, ReplyTo, Contact string
	// UpdatedAt is zero when the tenant never set one.
	UpdatedAt time.Time
}

// Branding returns the tenant's branding; the zero Branding when none is set.
func (s *Store) Branding(ctx context.Context, tenant string) (Branding, error) {
	var b Branding
	err := s.pool.QueryRow(ctx, `SELECT name, primary_color, accent_color, logo_url, reply_to, contact, updated_at
		FROM notification_branding WHERE tenant_id = $1`, tenant).
		Scan(&b.Name, &b.PrimaryColor, &b.AccentColor, &b.LogoURL, &b.ReplyTo, &b.Contact, &b.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Branding{}, nil
	}
	return b, err
}

// SetBranding replaces the tenant's branding and returns it as stored.
func (s *Store) SetBranding(ctx context.Context, tenant string, b Branding) (Branding, error) {
	err := s.pool.QueryRow(ctx, `INSERT INTO notification_branding
		(tenant_id, name, primary_color, accent_color, logo_url, reply_to, contact, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, now())
		ON CONFLICT (tenant_id) DO UPDATE SET name = $2, primary_color = $3, accent_color = $4, logo_url = $5,
		reply_to = $6, contact = $7, updated_at = now() RETURNING updated_at`,
		tenant, b.Name, b.PrimaryColor, b.AccentColor, b.LogoURL, b.ReplyTo, b.Contact).Scan(&b.UpdatedAt)
	return b, err
}
