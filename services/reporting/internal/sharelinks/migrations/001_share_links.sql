-- +goose Up
-- Every share link reporting minted, so that links can be listed and
-- revoked one by one. The token itself is not stored: it is the HMAC of
-- (tenant, conversation, expiry, link id) and is recomputed when needed.
CREATE TABLE reporting_share_links (
    tenant_id         text NOT NULL,
    link_id           text NOT NULL,
    conversation_id   text NOT NULL,
    created_by_key_id text NOT NULL,
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    revoked_at        timestamptz,
    PRIMARY KEY (tenant_id, link_id)
);
CREATE INDEX reporting_share_links_conversation ON reporting_share_links (tenant_id, conversation_id, created_by_key_id, expires_at);
CREATE INDEX reporting_share_links_created ON reporting_share_links (tenant_id, created_at DESC, link_id DESC);

-- +goose Down
DROP TABLE reporting_share_links;
