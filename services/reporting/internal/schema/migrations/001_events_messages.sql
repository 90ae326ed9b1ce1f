-- Raw events: one row per event in PARLEY_CONV. Replaying the stream inserts
-- the same rows again; ReplacingMergeTree keeps one per event_id (read with
-- FINAL, or GROUP BY event_id, for exact counts before merges).
-- Times: DateTime columns are UTC seconds; *_us columns carry microseconds
-- since the Unix epoch for exact ordering (ClickHouse 18.16 has no DateTime64).
CREATE TABLE IF NOT EXISTS events (
    tenant_id       String,
    conversation_id String,
    event_id        String,
    kind            String,
    stream_seq      UInt64,
    occurred_at     DateTime,
    occurred_at_us  Int64,
    recorded_at     DateTime,
    producer        String,
    causation_id    String,
    correlation_id  String,
    trace_id        String,
    payload_json    String
) ENGINE = ReplacingMergeTree(stream_seq)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, conversation_id, event_id);

-- Messages: one row per MessagePosted event.
CREATE TABLE IF NOT EXISTS messages (
    tenant_id         String,
    conversation_id   String,
    event_id          String,
    message_id        String,
    role              Enum8('unspecified' = 0, 'visitor' = 1, 'bot' = 2, 'agent' = 3, 'system' = 4),
    text              String,
    intent            String,
    intent_confidence Float32,
    unidentified      UInt8,
    flow_id           String,
    node_id           String,
    agent_id          String,
    response_time_ms  UInt32,
    paid              UInt8,
    occurred_at       DateTime,
    occurred_at_us    Int64,
    recorded_at       DateTime,
    stream_seq        UInt64,
    trace_id          String
) ENGINE = ReplacingMergeTree(stream_seq)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, conversation_id, event_id);
