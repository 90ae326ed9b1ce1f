-- +goose Up
-- The projector's fold state: each conversation's latest convstate.State as
-- JSON, with the stream sequence of the last event applied. ClickHouse holds
-- the same state for readers; this copy lets the projector update a
-- conversation without reading ClickHouse back.
CREATE TABLE reporting_conversation_state (
    tenant_id       text   NOT NULL,
    conversation_id text   NOT NULL,
    last_seq        bigint NOT NULL,
    state           jsonb  NOT NULL,
    PRIMARY KEY (tenant_id, conversation_id)
);

-- +goose Down
DROP TABLE reporting_conversation_state;
