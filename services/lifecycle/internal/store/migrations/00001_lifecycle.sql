-- +goose Up

-- One row per conversation: lifecycle's state machine. Rows of ended
-- conversations are kept, so that a late event never reopens one.
CREATE TABLE lifecycle_conversations (
    tenant_id             text        NOT NULL,
    conversation_id       text        NOT NULL,
    status                text        NOT NULL CHECK (status IN ('active', 'ended')),
    channel               text        NOT NULL DEFAULT 'CHANNEL_UNSPECIFIED',
    bot_id                text        NOT NULL DEFAULT '',
    conversation_type     text        NOT NULL DEFAULT 'CONVERSATION_TYPE_UNSPECIFIED',
    started_at            timestamptz NOT NULL,
    last_activity_at      timestamptz NOT NULL,
    -- last_activity_at + the conversation's session timeout: when the
    -- sweeper ends it (scheduling only; recomputed when timeouts change).
    stale_at              timestamptz NOT NULL,
    ended_at              timestamptz,
    end_reason            text,
    ended_by              text        NOT NULL DEFAULT '',
    -- Stream sequence at which the log ends the conversation (0 while an
    -- end decided by a sweep or an administrator is not read back yet).
    end_seq               bigint      NOT NULL DEFAULT 0,
    handoff_requested_at  timestamptz,
    handoff_event_id      text        NOT NULL DEFAULT '',
    awaiting_agent        boolean     NOT NULL DEFAULT false,
    operator_no_response  boolean     NOT NULL DEFAULT false,
    takeover_at           timestamptz,
    agent_id              text        NOT NULL DEFAULT '',
    agent_name            text        NOT NULL DEFAULT '',
    agent_joined_at       timestamptz,
    agent_left_at         timestamptz,
    pending_visitor_at    timestamptz,
    first_response_ms     bigint,
    agent_replies         integer     NOT NULL DEFAULT 0,
    agent_response_ms_sum bigint      NOT NULL DEFAULT 0,
    visitor_messages      integer     NOT NULL DEFAULT 0,
    goals_reached         integer     NOT NULL DEFAULT 0,
    flows_completed       integer     NOT NULL DEFAULT 0,
    late_events           integer     NOT NULL DEFAULT 0,
    engagement            text,
    resolved              boolean     NOT NULL DEFAULT false,
    -- Highest PARLEY_CONV sequence applied to this conversation.
    applied_seq           bigint      NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, conversation_id)
);

-- The stale sweeper reads only conversations that are due.
CREATE INDEX lifecycle_conversations_stale_at ON lifecycle_conversations (stale_at) WHERE status = 'active';
-- EndStale (idle longer than N hours) and the tenant's longest-idle conversation.
CREATE INDEX lifecycle_conversations_last_activity ON lifecycle_conversations (tenant_id, last_activity_at) WHERE status = 'active';
-- Handoffs waiting for an agent (operator_no_response).
CREATE INDEX lifecycle_conversations_awaiting ON lifecycle_conversations (handoff_requested_at) WHERE awaiting_agent AND status = 'active';

-- Session timeouts: tenant_id '*' holds the service-wide per-channel
-- defaults (PARLEY_LIFECYCLE_CHANNEL_TIMEOUTS), channel '*' a tenant's
-- timeout for every channel without its own row.
CREATE TABLE lifecycle_session_timeouts (
    tenant_id       text        NOT NULL,
    channel         text        NOT NULL,
    timeout_seconds integer     NOT NULL CHECK (timeout_seconds > 0),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel)
);

-- lifecycle_session_timeout resolves a conversation's timeout: the tenant's
-- channel row, else the tenant's '*' row, else the service's channel
-- default, else p_default (PARLEY_LIFECYCLE_SESSION_TIMEOUT).
-- +goose StatementBegin
CREATE FUNCTION lifecycle_session_timeout(p_tenant text, p_channel text, p_default integer) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT COALESCE(
        (SELECT timeout_seconds FROM lifecycle_session_timeouts WHERE tenant_id = p_tenant AND channel = p_channel),
        (SELECT timeout_seconds FROM lifecycle_session_timeouts WHERE tenant_id = p_tenant AND channel = '*'),
        (SELECT timeout_seconds FROM lifecycle_session_timeouts WHERE tenant_id = '*' AND channel = p_channel),
        p_default)
$$;
-- +goose StatementEnd

-- Transactional outbox: derived events (and ended-view updates) written in
-- the same transaction as the state change, published after commit.
CREATE TABLE lifecycle_outbox (
    id                bigserial   PRIMARY KEY,
    tenant_id         text        NOT NULL,
    conversation_id   text        NOT NULL,
    kind              text        NOT NULL,
    event_id          text        NOT NULL DEFAULT '',
    -- Serialized parley.event.v1.Envelope; NULL for a view update only.
    envelope          bytea,
    -- recorded_at of the event that caused it (NULL for sweeps and calls).
    cause_recorded_at timestamptz,
    -- Set when the conversation ended: write the PARLEY_CONV_ENDED entry.
    view_ended_at     timestamptz,
    view_end_reason   text,
    created_at        timestamptz NOT NULL DEFAULT now()
);

-- How far the consumer got (highest stream sequence committed).
CREATE TABLE lifecycle_position (
    stream      text        PRIMARY KEY,
    applied_seq bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE lifecycle_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- +goose Down
DROP TABLE lifecycle_meta;
DROP TABLE lifecycle_position;
DROP TABLE lifecycle_outbox;
DROP FUNCTION lifecycle_session_timeout(text, text, integer);
DROP TABLE lifecycle_session_timeouts;
DROP TABLE lifecycle_conversations;
