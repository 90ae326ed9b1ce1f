-- +goose Up
-- Alert rules over rates and costs: what a rule measures and its limits.
ALTER TABLE notification_alert_rules ADD COLUMN metric text NOT NULL DEFAULT 'count';
ALTER TABLE notification_alert_rules ADD COLUMN issue_kind text NOT NULL DEFAULT '';
ALTER TABLE notification_alert_rules ADD COLUMN rate_threshold double precision NOT NULL DEFAULT 0;
ALTER TABLE notification_alert_rules ADD COLUMN min_messages bigint NOT NULL DEFAULT 0;
ALTER TABLE notification_alert_rules ADD COLUMN currency text NOT NULL DEFAULT '';
ALTER TABLE notification_alert_rules ADD COLUMN budget_micros bigint NOT NULL DEFAULT 0;
ALTER TABLE notification_alert_rules ADD COLUMN value double precision NOT NULL DEFAULT 0;
-- Per bucket: unidentified bot answers (unidentified_rate) or cost in
-- micros (cost_per_day) next to the count.
ALTER TABLE notification_alert_counts ADD COLUMN value bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE notification_alert_counts DROP COLUMN value;
ALTER TABLE notification_alert_rules DROP COLUMN value;
ALTER TABLE notification_alert_rules DROP COLUMN budget_micros;
ALTER TABLE notification_alert_rules DROP COLUMN currency;
ALTER TABLE notification_alert_rules DROP COLUMN min_messages;
ALTER TABLE notification_alert_rules DROP COLUMN rate_threshold;
ALTER TABLE notification_alert_rules DROP COLUMN issue_kind;
ALTER TABLE notification_alert_rules DROP COLUMN metric;
