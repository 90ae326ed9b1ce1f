-- +goose Up

-- When ingest recorded each conversation's latest client fact (the
-- envelope's recorded_at). A conversation is idle since the later of
-- last_activity_at (the client's clock) and this, so that history imported
-- with old timestamps over several requests is not ended as stale between
-- them. Existing rows start from their last activity.
ALTER TABLE lifecycle_conversations ADD COLUMN last_recorded_at timestamptz;
UPDATE lifecycle_conversations SET last_recorded_at = last_activity_at;
ALTER TABLE lifecycle_conversations ALTER COLUMN last_recorded_at SET NOT NULL;

-- EndIdle (idle longer than N hours) reads the idle start.
DROP INDEX lifecycle_conversations_last_activity;
CREATE INDEX lifecycle_conversations_idle_since ON lifecycle_conversations
    (tenant_id, GREATEST(last_activity_at, last_recorded_at)) WHERE status = 'active';

-- +goose Down
DROP INDEX lifecycle_conversations_idle_since;
CREATE INDEX lifecycle_conversations_last_activity ON lifecycle_conversations (tenant_id, last_activity_at) WHERE status = 'active';
ALTER TABLE lifecycle_conversations DROP COLUMN last_recorded_at;
