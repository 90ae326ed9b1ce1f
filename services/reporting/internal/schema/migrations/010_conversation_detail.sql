-- Conversation detail (issue 14): where each variable came from, the debug
-- flag, the client's bot latency apart from lifecycle's agent response
-- times, and usage per model and currency. ADD COLUMN appends at the end, in
-- this order (services/reporting/internal/convrow declares the row);
-- ClickHouse 18.16 and current versions accept it.
ALTER TABLE conversations
    ADD COLUMN variable_sources Array(String),
    ADD COLUMN debug_enabled UInt8,
    ADD COLUMN bot_response_ms_sum UInt64,
    ADD COLUMN bot_response_count UInt32,
    ADD COLUMN usage_models Array(String),
    ADD COLUMN usage_currencies Array(String),
    ADD COLUMN usage_cost_micros Array(Int64),
    ADD COLUMN usage_input_tokens Array(UInt64),
    ADD COLUMN usage_output_tokens Array(UInt64);
