-- Conversations sorted by start time within a tenant, so time-range queries
-- (every list and dashboard has one) read only the matching part of the
-- table, and FINAL merges only that part. started_at_us never changes for a
-- conversation, so it can be part of the ReplacingMergeTree key.
CREATE TABLE IF NOT EXISTS conversations_by_start AS conversations
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY (tenant_id, started_at_us, conversation_id);

INSERT INTO conversations_by_start SELECT * FROM conversations;

RENAME TABLE conversations TO conversations_unsorted, conversations_by_start TO conversations;

DROP TABLE conversations_unsorted;
