-- +goose Up

-- The bot runs in debug mode for the conversation (conversation_started's
-- debug_enabled; a later start can turn it on, not off). Bots read it with
-- GetDebugMode. Rows of conversations started before this migration start
-- without it (false) until a later conversation_started turns it on.
ALTER TABLE lifecycle_conversations ADD COLUMN debug_enabled boolean NOT NULL DEFAULT false;

-- +goose Down
ALTER TABLE lifecycle_conversations DROP COLUMN debug_enabled;
