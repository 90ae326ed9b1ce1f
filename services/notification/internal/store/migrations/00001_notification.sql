-- +goose Up
CREATE TABLE notification_subscriptions (
    tenant_id           text        NOT NULL,
    subscription_id     text        NOT NULL UNIQUE,
    name                text        NOT NULL DEFAULT '',
    kind                text        NOT NULL,
    target              text        NOT NULL DEFAULT '',
    emails              text[]      NOT NULL DEFAULT '{}',
    event_kinds         text[]      NOT NULL DEFAULT '{}',
    condition           text        NOT NULL DEFAULT '',
    owner_email         text        NOT NULL DEFAULT '',
    state               text        NOT NULL DEFAULT 'active',
    secret              text        NOT NULL DEFAULT '',
    previous_secret     text        NOT NULL DEFAULT '',
    previous_expires_at timestamptz,
    disabled_reason     text        NOT NULL DEFAULT '',
    disabled_at         timestamptz,
    failing_since       timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subscription_id)
);

-- Each conversation's facts (parley.tagging.v1.RuleConversation) as of the
-- last event applied: the conditions' `conversation` and the payloads'
-- conversation summary.
CREATE TABLE notification_conversations (
    tenant_id       text  NOT NULL,
    conversation_id text  NOT NULL,
    facts           bytea NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);

CREATE TABLE notification_deliveries (
    tenant_id       text        NOT NULL,
    delivery_id     text        NOT NULL,
    subscription_id text        NOT NULL,
    kind            text        NOT NULL,
    event_id        text        NOT NULL DEFAULT '',
    event_kind      text        NOT NULL DEFAULT '',
    conversation_id text        NOT NULL DEFAULT '',
    stream_seq      bigint      NOT NULL DEFAULT 0,
    payload         bytea       NOT NULL,
    recipients      text[]      NOT NULL DEFAULT '{}',
    state           text        NOT NULL DEFAULT 'pending',
    attempts        integer     NOT NULL DEFAULT 0,
    last_status     integer     NOT NULL DEFAULT 0,
    last_error      text        NOT NULL DEFAULT '',
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    PRIMARY KEY (tenant_id, delivery_id)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (subscription_id, next_attempt_at) WHERE state = 'pending';
CREATE INDEX notification_deliveries_log ON notification_deliveries (tenant_id, subscription_id, created_at DESC);

CREATE TABLE notification_attempts (
    id              bigserial   PRIMARY KEY,
    tenant_id       text        NOT NULL,
    delivery_id     text        NOT NULL,
    subscription_id text        NOT NULL,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    status_code     integer     NOT NULL DEFAULT 0,
    latency_ms      integer     NOT NULL DEFAULT 0,
    error           text        NOT NULL DEFAULT '',
    success         boolean     NOT NULL
);
CREATE INDEX notification_attempts_log ON notification_attempts (tenant_id, subscription_id, id DESC);

-- +goose Down
DROP TABLE notification_attempts;
DROP TABLE notification_deliveries;
DROP TABLE notification_conversations;
DROP TABLE notification_subscriptions;
