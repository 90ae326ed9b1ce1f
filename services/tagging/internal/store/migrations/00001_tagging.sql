-- +goose Up

-- One row per tenant that ever changed its rules or detector settings.
-- generation grows with every such change, in the same transaction: the live
-- consumer reads it (FOR SHARE) in each batch's transaction and reloads the
-- tenant's compiled rules when it moved, so a batch never applies a rule
-- version older than the one committed before it.
CREATE TABLE tagging_tenants (
    tenant_id  text   PRIMARY KEY,
    generation bigint NOT NULL DEFAULT 0
);

CREATE TABLE tagging_rules (
    tenant_id   text        NOT NULL,
    rule_id     text        NOT NULL,
    name        text        NOT NULL,
    -- CEL expression over `conversation` and `event`.
    expression  text        NOT NULL,
    tag         text        NOT NULL,
    enabled     boolean     NOT NULL DEFAULT true,
    description text        NOT NULL DEFAULT '',
    -- 1 at creation, +1 on every change.
    version     bigint      NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, rule_id)
);

-- Per-tenant detector settings (JSON of DetectorSettings); absent: the
-- service defaults.
CREATE TABLE tagging_detector_settings (
    tenant_id  text        PRIMARY KEY,
    settings   jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The label catalogue. AddLabel creates a label on first use.
CREATE TABLE tagging_labels (
    tenant_id  text        NOT NULL,
    label      text        NOT NULL,
    created_by text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, label)
);

-- Each conversation's folded facts (protobuf RuleConversation) and the last
-- event (RuleEvent), with the stream sequence applied up to: a redelivered
-- event with a sequence <= applied_seq is a no-op. evaluated_gen is the
-- tenant generation + 1 under which every rule was last evaluated on it
-- (0: never); until then the next event evaluates every rule, afterwards
-- only rules that read what an event changed.
CREATE TABLE tagging_conversations (
    tenant_id       text        NOT NULL,
    conversation_id text        NOT NULL,
    applied_seq     bigint      NOT NULL,
    evaluated_gen   bigint      NOT NULL DEFAULT 0,
    facts           bytea       NOT NULL,
    last_event      bytea       NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, conversation_id)
);

-- Tags in effect, one row per (conversation, rule or detector, tag). The
-- primary key makes applying idempotent: a TagApplied event is written only
-- by the transaction that inserts the row.
CREATE TABLE tagging_applied (
    tenant_id       text        NOT NULL,
    conversation_id text        NOT NULL,
    -- A rule id, or builtin:<detector>.
    rule_id         text        NOT NULL,
    tag             text        NOT NULL,
    -- rule, builtin_detector or backfill.
    source          text        NOT NULL,
    -- Version of the rule that last confirmed the tag (0 for detectors).
    rule_version    bigint      NOT NULL,
    -- Stream sequence of the event after which the condition held.
    trigger_seq     bigint      NOT NULL,
    -- Id of the TagApplied event.
    event_id        text        NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, conversation_id, rule_id, tag)
);
CREATE INDEX tagging_applied_rule ON tagging_applied (tenant_id, rule_id);

-- Transactional outbox: derived events written in the same transaction as
-- the state that caused them, published after commit and then deleted.
CREATE TABLE tagging_outbox (
    id         bigserial   PRIMARY KEY,
    event_id   text        NOT NULL,
    envelope   bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE tagging_outbox;
DROP TABLE tagging_applied;
DROP TABLE tagging_conversations;
DROP TABLE tagging_labels;
DROP TABLE tagging_detector_settings;
DROP TABLE tagging_rules;
DROP TABLE tagging_tenants;
