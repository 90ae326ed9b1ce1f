-- A visitor's conversations: one row per conversation with a visitor token,
-- written by the projector when it applies the conversation_started that
-- sets the token. Ordered by (tenant_id, visitor_token, ...), GetVisitor and
-- the visitor_token filter read only that visitor's rows, then the
-- conversations they name by the conversations table's key (tenant_id,
-- started_at_us, conversation_id), never every conversation of the tenant.
-- Rows are a pure function of the conversation's start, so a replay writes
-- the same rows again and ReplacingMergeTree collapses them.
CREATE TABLE IF NOT EXISTS visitor_conversations (
    tenant_id       String,
    visitor_token   String,
    started_at_us   Int64,
    conversation_id String
) ENGINE = ReplacingMergeTree()
ORDER BY (tenant_id, visitor_token, started_at_us, conversation_id);

INSERT INTO visitor_conversations SELECT tenant_id, visitor_token, started_at_us, conversation_id FROM conversations FINAL WHERE visitor_token != '';
