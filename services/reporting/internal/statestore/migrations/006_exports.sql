-- +goose Up
-- Export jobs (services/reporting/internal/export): any replica claims a
-- queued job, or a running one whose owner stopped heartbeating.
CREATE TABLE reporting_exports (
    tenant_id    text NOT NULL,
    export_id    text NOT NULL,
    request      jsonb NOT NULL,
    state        text NOT NULL,
    rows_written bigint NOT NULL DEFAULT 0,
    owner        text NOT NULL DEFAULT '',
    heartbeat_at timestamptz,
    error        text NOT NULL DEFAULT '',
    blob_key     text NOT NULL DEFAULT '',
    manifest     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    expires_at   timestamptz,
    PRIMARY KEY (tenant_id, export_id)
);
CREATE INDEX reporting_exports_work ON reporting_exports (state, created_at);

-- +goose Down
DROP TABLE reporting_exports;
