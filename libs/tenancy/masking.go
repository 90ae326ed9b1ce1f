package tenancy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// MaskingRule is a stored PII masking rule (ingest validates and applies it).
type MaskingRule struct {
	ID, Detector, Pattern, Action string
	UpdatedAt                     time.Time
}

// MaskingRules returns the tenant's masking rules in id order.
func (s *Store) MaskingRules(ctx context.Context, tenantID string) ([]MaskingRule, error) {
	rows, err := s.pool.Query(ctx, `SELECT rule_id, detector, pattern, action, updated_at FROM masking_rules WHERE tenant_id = $1 ORDER BY rule_id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("tenancy: masking rules: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (MaskingRule, error) {
		var m MaskingRule
		err := r.Scan(&m.ID, &m.Detector, &m.Pattern, &m.Action, &m.UpdatedAt)
		return m, err
	})
	if err != nil {
		return nil, fmt.Errorf("tenancy: masking rules: %w", err)
	}
	return out, nil
}

// PutMaskingRule creates or replaces a rule, unless the tenant would then
// have more than maxRules (false, nil). ErrNotFound for an unknown tenant.
func (s *Store) PutMaskingRule(ctx context.Context, tenantID string, r MaskingRule, maxRules int) (bool, error) {
	ok := true
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT true FROM tenants WHERE tenant_id = $1 FOR UPDATE`, tenantID).Scan(&exists); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return ErrNotFound
			}
			return fmt.Errorf("tenancy: put masking rule: %w", err)
		}
		var others int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM masking_rules WHERE tenant_id = $1 AND rule_id <> $2`, tenantID, r.ID).Scan(&others); err != nil {
			return fmt.Errorf("tenancy: put masking rule: %w", err)
		}
		if others >= maxRules {
			ok = false
			return nil
		}
		_, err := tx.Exec(ctx, `INSERT INTO masking_rules (tenant_id, rule_id, detector, pattern, action, updated_at) VALUES ($1, $2, $3, $4, $5, now())
			ON CONFLICT (tenant_id, rule_id) DO UPDATE SET detector = EXCLUDED.detector, pattern = EXCLUDED.pattern, action = EXCLUDED.action, updated_at = now()`,
			tenantID, r.ID, r.Detector, r.Pattern, r.Action)
		if err != nil {
			return fmt.Errorf("tenancy: put masking rule: %w", err)
		}
		return nil
	})
	return ok, err
}

// DeleteMaskingRule removes a rule; found is false when there was none.
func (s *Store) DeleteMaskingRule(ctx context.Context, tenantID, ruleID string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM masking_rules WHERE tenant_id = $1 AND rule_id = $2`, tenantID, ruleID)
	if err != nil {
		return false, fmt.Errorf("tenancy: delete masking rule: %w", err)
	}
	return tag.RowsAffected() > 0, nil
}
