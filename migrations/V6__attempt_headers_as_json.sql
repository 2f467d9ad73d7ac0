-- Attempt headers are written once and only ever read back whole, by the API. As jsonb, every
-- insert parsed them into a tree and rebuilt them in binary form: a tenth of PostgreSQL's CPU
-- on the write path (perf, fan-out 1). `json` keeps the text as sent, after checking that it
-- is valid JSON, and reads back as the same JSON. This rewrites the attempts table once, under
-- an exclusive lock (reads and writes of it wait).
ALTER TABLE attempts
    ALTER COLUMN request_headers TYPE json USING request_headers::json,
    ALTER COLUMN response_headers TYPE json USING response_headers::json;
