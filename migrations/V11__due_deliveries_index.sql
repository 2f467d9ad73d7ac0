-- The deliveries waiting for an attempt, by when it is due: the oldest overdue one is a gauge
-- read at every scrape. Only pending and retrying rows are indexed, a small share of the
-- table (a delivery's first attempt usually records it straight as succeeded).
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying');
