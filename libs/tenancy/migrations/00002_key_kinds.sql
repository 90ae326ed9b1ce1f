-- +goose Up
-- Key kinds: server keys (secret, as before), publishable widget keys bound to
-- browser origins, and platform keys that belong to no tenant and hold only
-- the operator scope. Every existing key stays a server key.
ALTER TABLE api_keys ALTER COLUMN tenant_id DROP NOT NULL;
ALTER TABLE api_keys ADD COLUMN kind text NOT NULL DEFAULT 'server';
ALTER TABLE api_keys ADD COLUMN allowed_origins text[] NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD CONSTRAINT api_keys_kind CHECK (kind IN ('server', 'publishable'));
-- operator exactly on platform keys, and nothing else on them.
ALTER TABLE api_keys ADD CONSTRAINT api_keys_platform CHECK (
    (tenant_id IS NULL AND kind = 'server' AND scopes = ARRAY['operator'])
    OR (tenant_id IS NOT NULL AND NOT ('operator' = ANY (scopes))));
ALTER TABLE api_keys ADD CONSTRAINT api_keys_publishable CHECK (
    kind <> 'publishable' OR (scopes = ARRAY['ingest'] AND cardinality(allowed_origins) > 0));

-- +goose Down
DELETE FROM api_keys WHERE tenant_id IS NULL;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_publishable;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_platform;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_kind;
ALTER TABLE api_keys DROP COLUMN allowed_origins;
ALTER TABLE api_keys DROP COLUMN kind;
ALTER TABLE api_keys ALTER COLUMN tenant_id SET NOT NULL;
