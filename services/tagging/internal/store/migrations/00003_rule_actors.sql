-- +goose Up

-- Who created a rule and who changed it last: the API key ("api-key:<id>")
-- of the call, never a name the request supplies. Rules created before this
-- migration have ''.
ALTER TABLE tagging_rules ADD COLUMN created_by text NOT NULL DEFAULT '',
                          ADD COLUMN updated_by text NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE tagging_rules DROP COLUMN updated_by, DROP COLUMN created_by;
