-- +goose Up
-- States are saved in convstate's binary encoding (state_bin, first byte
-- the format version), which is several times cheaper to write and read
-- than JSON. Rows saved before keep their JSON in state until their
-- conversation's next event rewrites them; exactly one of the two columns
-- is set. Replicas of an earlier build cannot read binary states (their
-- batches fail and are redelivered, possibly to an updated replica), so do
-- not leave old and new replicas running side by side for long.
ALTER TABLE reporting_conversation_state ADD COLUMN state_bin bytea;
ALTER TABLE reporting_conversation_state ALTER COLUMN state DROP NOT NULL;

-- +goose Down
-- Binary states cannot be turned back into JSON in SQL: they are dropped,
-- so run a projection rebuild after going back.
DELETE FROM reporting_conversation_state WHERE state IS NULL;
ALTER TABLE reporting_conversation_state ALTER COLUMN state SET NOT NULL;
ALTER TABLE reporting_conversation_state DROP COLUMN state_bin;
