-- +goose Up
-- Per-tenant model prices (optional): reporting computes the cost of usage
-- the bot sent without one from its tokens (services/reporting/internal/prices).
-- Prices are micros of currency per million tokens.
CREATE TABLE reporting_model_prices (
    tenant_id           text NOT NULL,
    model               text NOT NULL,
    currency            text NOT NULL,
    input_micros_per_m  bigint NOT NULL CHECK (input_micros_per_m >= 0),
    output_micros_per_m bigint NOT NULL CHECK (output_micros_per_m >= 0),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, model)
);

-- +goose Down
DROP TABLE reporting_model_prices;
