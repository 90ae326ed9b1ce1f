-- +goose Up
-- A tenant's PII masking rules, applied by ingest before events are stored
-- (docs/privacy.md).
CREATE TABLE masking_rules (
    tenant_id  text NOT NULL REFERENCES tenants (tenant_id) ON DELETE CASCADE,
    rule_id    text NOT NULL,
    detector   text NOT NULL,
    pattern    text NOT NULL DEFAULT '',
    action     text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, rule_id)
);

-- +goose Down
DROP TABLE masking_rules;
