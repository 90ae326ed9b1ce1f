// Package prices keeps each tenant's optional model price table and prices
// usage the bot sent without a cost.
package prices

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/parley-dev/parley/services/reporting/internal/convstate"
)

// Price is what one model costs a tenant: micros of Currency per million
// input and output tokens.
type Price struct {
	Model            string
	Currency         string
	InputMicrosPerM  int64
	OutputMicrosPerM int64
	UpdatedAt        time.Time
}

// MaxPerTenant bounds a tenant's price table.
const MaxPerTenant = 1000

// Store reads and writes price tables in PostgreSQL.
type Store struct{ pool *pgxpool.Pool }

// New returns a store on pool (tables of statestore's migrations).
func New(pool *pgxpool.Pool) *Store { return &Store{pool: pool} }

// ErrFull means the tenant has MaxPerTenant prices and p is a new model.
var ErrFull = fmt.Errorf("prices: at most %d models per tenant", MaxPerTenant)

// Set creates or replaces the price of p.Model for tenant and returns it as
// stored.
func (s *Store) Set(ctx context.Context, tenant string, p Price) (Price, error) {
	row := s.pool.QueryRow(ctx, `INSERT INTO reporting_model_prices (tenant_id, model, currency, input_micros_per_m, output_micros_per_m)
		SELECT $1, $2, $3, $4, $5
		WHERE EXISTS (SELECT 1 FROM reporting_model_prices WHERE tenant_id = $1 AND model = $2)
		   OR (SELECT count(*) FROM reporting_model_prices WHERE tenant_id = $1) < $6
		ON CONFLICT (tenant_id, model) DO UPDATE SET currency = EXCLUDED.currency,
			input_micros_per_m = EXCLUDED.input_micros_per_m, output_micros_per_m = EXCLUDED.output_micros_per_m, updated_at = now()
		RETURNING updated_at`, tenant, p.Model, p.Currency, p.InputMicrosPerM, p.OutputMicrosPerM, MaxPerTenant)
	if err := row.Scan(&p.UpdatedAt); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return Price{}, ErrFull
		}
		return Price{}, fmt.Errorf("prices: set: %w", err)
	}
	return p, nil
}

// List returns the tenant's prices by model.
func (s *Store) List(ctx context.Context, tenant string) ([]Price, error) {
	rows, err := s.pool.Query(ctx, `SELECT model, currency, input_micros_per_m, output_micros_per_m, updated_at
		FROM reporting_model_prices WHERE tenant_id = $1 ORDER BY model`, tenant)
	if err != nil {
		return nil, fmt.Errorf("prices: list: %w", err)
	}
	defer rows.Close()
	var out []Price
	for rows.Next() {
		var p Price
		if err := rows.Scan(&p.Model, &p.Currency, &p.InputMicrosPerM, &p.OutputMicrosPerM, &p.UpdatedAt); err != nil {
			return nil, fmt.Errorf("prices: list: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("prices: list: %w", err)
	}
	return out, nil
}

// Priced is a usage line, with its cost computed from the price table when
// the bot sent none.
type Priced struct {
	convstate.Usage
	// Estimated: the cost comes from the price table, not from the bot.
	Estimated bool
}

// Apply prices the lines that have tokens but no cost and a price for
// their model: cost = tokens × price per million, rounded down, in the
// price's currency. Other lines stay as they are.
func Apply(lines []convstate.Usage, table []Price) []Priced {
	byModel := make(map[string]Price, len(table))
	for _, p := range table {
		byModel[p.Model] = p
	}
	out := make([]Priced, len(lines))
	for i, l := range lines {
		out[i] = Priced{Usage: l}
		p, ok := byModel[l.Model]
		if !ok || l.CostMicros != 0 || l.InputTokens+l.OutputTokens == 0 {
			continue
		}
		cost := new(big.Int).Mul(new(big.Int).SetUint64(l.InputTokens), big.NewInt(p.InputMicrosPerM))
		cost.Add(cost, new(big.Int).Mul(new(big.Int).SetUint64(l.OutputTokens), big.NewInt(p.OutputMicrosPerM)))
		cost.Quo(cost, big.NewInt(1_000_000))
		if !cost.IsInt64() {
			continue
		}
		out[i].CostMicros, out[i].Currency, out[i].Estimated = cost.Int64(), p.Currency, true
	}
	return out
}
