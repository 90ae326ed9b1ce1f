-- +goose Up
-- Reporting's own settings, e.g. the secret that signs share links (created
-- on first start, shared by every replica).
CREATE TABLE reporting_settings (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

-- +goose Down
DROP TABLE reporting_settings;
