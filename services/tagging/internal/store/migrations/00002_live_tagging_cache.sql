-- +goose Up

-- Live tagging rewrites a conversation's row after every batch that touched
-- it. Free space on each page lets those updates stay on the page (HOT: no
-- new index entry, pruned in place) instead of moving every new version to
-- another page.
ALTER TABLE tagging_conversations SET (fillfactor = 50);

-- tags_rev moves whenever anything but live tagging changes the
-- conversation's rows in tagging_applied (backfill, rule deletion), in the
-- same transaction. Live tagging keeps recently touched conversations' facts
-- and tags in memory and uses them only while applied_seq and tags_rev are
-- still the values it knows.
ALTER TABLE tagging_conversations ADD COLUMN tags_rev bigint NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE tagging_conversations DROP COLUMN tags_rev;
ALTER TABLE tagging_conversations RESET (fillfactor);
