-- Full-text search index: one row per distinct word (services/reporting/
-- internal/search.Tokens) of each message, with its conversation's start
-- (the conversations table's key). Ordered by (tenant_id, token, day), a
-- search reads only the granules of its words in the time range, and the
-- conversations it finds are read by primary key, never every message or
-- conversation of the tenant. Rows are a pure function of the message event
-- and its conversation's start, so a replay writes the same rows again and
-- ReplacingMergeTree collapses them.
CREATE TABLE IF NOT EXISTS message_tokens (
    tenant_id       String,
    token           String,
    day             Date,
    started_at_us   Int64,
    conversation_id String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, token, day, started_at_us, conversation_id);

-- Whether an agent is in the conversation now: it is active, and some agent
-- joined and has not left (AgentJoined / AgentLeft).
ALTER TABLE conversations ADD COLUMN agent_present UInt8 AFTER agent_name;
