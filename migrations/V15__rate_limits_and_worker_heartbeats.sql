-- A webhook's own limit on attempts per second (NULL: none), held across workers.
ALTER TABLE webhooks ADD COLUMN rate_limit integer CHECK (rate_limit BETWEEN 1 AND 10000);

-- Each running worker beats here every few seconds; the live ones share each rate limit.
CREATE TABLE workers (
    id uuid PRIMARY KEY,
    heartbeat_at timestamptz NOT NULL
);
