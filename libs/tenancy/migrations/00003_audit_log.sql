-- +goose Up
-- One row per mutating gRPC call (and per denied call of a mutating method):
-- who (tenant, key), what (method), how it ended (gRPC code), when, from where.
CREATE TABLE audit_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL,
    tenant_id text,
    key_id    text NOT NULL DEFAULT '',
    method    text NOT NULL,
    code      text NOT NULL,
    peer      text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_tenant_at ON audit_log (tenant_id, at);
CREATE INDEX audit_log_at ON audit_log (at);

-- +goose Down
DROP TABLE audit_log;
