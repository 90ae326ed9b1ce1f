-- +goose Up
-- The generation of the live projection tables: a rebuild's swap locks this
-- row (FOR UPDATE) while it catches up and swaps, and increments it; every
-- replica's projector reads it before writing and checks it (FOR SHARE) in
-- the transaction that commits its fold states and partition position.
CREATE TABLE reporting_projection (
    id         int PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO reporting_projection (id, generation) VALUES (1, 0);

-- +goose Down
DROP TABLE reporting_projection;
