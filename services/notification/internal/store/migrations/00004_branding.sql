-- +goose Up
-- Each tenant's email branding (mail.Branding); no row: Parley's defaults.
CREATE TABLE notification_branding (
    tenant_id     text        PRIMARY KEY,
    name          text        NOT NULL DEFAULT '',
    primary_color text        NOT NULL DEFAULT '',
    accent_color  text        NOT NULL DEFAULT '',
    logo_url      text        NOT NULL DEFAULT '',
    reply_to      text        NOT NULL DEFAULT '',
    contact       text        NOT NULL DEFAULT '',
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE notification_branding;
