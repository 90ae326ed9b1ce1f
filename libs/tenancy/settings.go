package tenancy

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"
)

// Settings are a tenant's settings: its time zone and its bot registry.
type Settings struct {
	// TimeZone is an IANA zone name ("UTC" when unset).
	TimeZone string
	// Bots maps bot ids to display names.
	Bots map[string]string
}

// BotIDs returns the registry's bot ids in order.
func (s Settings) BotIDs() []string {
	ids := make([]string, 0, len(s.Bots))
	for id := range s.Bots {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Settings reads a tenant's settings (ErrNotFound for an unknown tenant).
func (s *Store) Settings(ctx context.Context, tenantID string) (Settings, error) {
	out := Settings{Bots: map[string]string{}}
	err := s.pool.QueryRow(ctx, `SELECT coalesce(nullif(time_zone, ''), 'UTC') FROM tenants WHERE tenant_id = $1`, tenantID).Scan(&out.TimeZone)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, ErrNotFound
	}
	if err != nil {
		return out, fmt.Errorf("tenancy: settings: %w", err)
	}
	if out.Bots, err = s.BotNames(ctx, tenantID); err != nil {
		return out, err
	}
	return out, nil
}

// BotNames returns the tenant's bot registry: display names by bot id.
func (s *Store) BotNames(ctx context.Context, tenantID string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT bot_id, name FROM bots WHERE tenant_id = $1`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("tenancy: bots: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, name string
		if err := rows.Scan(&id, &name); err != nil {
			return nil, fmt.Errorf("tenancy: bots: %w", err)
		}
		out[id] = name
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("tenancy: bots: %w", err)
	}
	return out, nil
}

// UpdateSettings sets the time zone (when not nil) and adds or renames the
// bots given, in one transaction. The caller validates the values.
func (s *Store) UpdateSettings(ctx context.Context, tenantID string, timeZone *string, bots map[string]string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE tenants SET time_zone = coalesce($2, time_zone) WHERE tenant_id = $1`, tenantID, timeZone)
		if err != nil {
			return fmt.Errorf("tenancy: update settings: %w", err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound
		}
		for id, name := range bots {
			if _, err := tx.Exec(ctx, `INSERT INTO bots (tenant_id, bot_id, name) VALUES ($1, $2, $3)
				ON CONFLICT (tenant_id, bot_id) DO UPDATE SET name = EXCLUDED.name`, tenantID, id, name); err != nil {
				return fmt.Errorf("tenancy: update settings: %w", err)
			}
		}
		return nil
	})
}
