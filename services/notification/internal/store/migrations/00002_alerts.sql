-- +goose Up
ALTER TABLE notification_subscriptions ADD COLUMN alerts boolean NOT NULL DEFAULT false;
ALTER TABLE notification_subscriptions ADD COLUMN transcript boolean NOT NULL DEFAULT false;

CREATE TABLE notification_alert_rules (
    tenant_id      text        NOT NULL,
    alert_id       text        NOT NULL UNIQUE,
    name           text        NOT NULL DEFAULT '',
    event_kind     text        NOT NULL,
    condition      text        NOT NULL DEFAULT '',
    window_seconds integer     NOT NULL,
    threshold      bigint      NOT NULL,
    comparison     text        NOT NULL,
    state          text        NOT NULL DEFAULT 'ok',
    count          bigint      NOT NULL DEFAULT 0,
    transitions    bigint      NOT NULL DEFAULT 0,
    changed_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, alert_id)
);

-- Matching events per rule and time bucket, written with the consumer's
-- position (so counted exactly once).
CREATE TABLE notification_alert_counts (
    alert_id text        NOT NULL,
    bucket   timestamptz NOT NULL,
    count    bigint      NOT NULL,
    PRIMARY KEY (alert_id, bucket)
);

-- +goose Down
DROP TABLE notification_alert_counts;
DROP TABLE notification_alert_rules;
ALTER TABLE notification_subscriptions DROP COLUMN alerts;
ALTER TABLE notification_subscriptions DROP COLUMN transcript;
